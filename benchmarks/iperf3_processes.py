"""iperf3 `processes: N` against bare iperf3 clients, unpaced on loopback, side by side in one run.

One iperf3 3.12 process is single-threaded, so one client is the limit long before the box is. This runs, in
turns (`--rounds` times each): vtax's iperf3 workload with 1 and with N processes (through the agent's task
entry point, servers and all), and N bare `iperf3 -c` clients started by hand. It prints one JSON object: the
mean summed Gbit/s of each, and the ratios (N processes / 1, vtax N / bare N).

    .venv/bin/python benchmarks/iperf3_processes.py [--processes 2] [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
from agent.tasks import TASKS


def _vtax(processes: int, seconds: int) -> float:
    params = {"processes": processes}
    target = TASKS["vtax.serve"](kind="iperf3", params=params, bind="127.0.0.1", deadline=time.time() + seconds + 20)
    now = time.time()
    result = TASKS["vtax.run_workload"](
        agent="bench",
        workload="iperf3",
        kind="iperf3",
        params=params,
        target=target,
        start_at=now + 0.2,
        duration=seconds,
        deadline=now + seconds + 10,
    )
    if result["status"] != "ok":
        raise SystemExit(f"vtax iperf3 failed: {result['reason']}")
    return statistics.fmean(s["values"]["throughput_gbps"] for s in result["samples"])


def _bare(count: int, seconds: int) -> float:
    ports, servers = [], []
    for _ in range(count):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        servers.append(
            subprocess.Popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(ports[-1])], stdout=subprocess.DEVNULL)
        )
    time.sleep(0.5)
    clients = [
        subprocess.Popen(["iperf3", "-c", "127.0.0.1", "-p", str(p), "-t", str(seconds), "-J"], stdout=subprocess.PIPE)
        for p in ports
    ]
    reports = [json.loads(c.communicate(timeout=seconds + 30)[0]) for c in clients]
    for server in servers:
        server.wait(timeout=10)
    return sum(r["end"]["sum_received"]["bits_per_second"] for r in reports) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    one, many, bare = [], [], []
    for _ in range(args.rounds):
        one.append(_vtax(1, args.seconds))
        many.append(_vtax(args.processes, args.seconds))
        bare.append(_bare(args.processes, args.seconds))
    print(
        json.dumps(
            {
                "processes": args.processes,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "vtax_1_gbps": [round(v, 2) for v in one],
                "vtax_n_gbps": [round(v, 2) for v in many],
                "bare_n_gbps": [round(v, 2) for v in bare],
                "n_over_1": round(statistics.fmean(many) / statistics.fmean(one), 3),
                "vtax_n_over_bare_n": round(statistics.fmean(many) / statistics.fmean(bare), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
