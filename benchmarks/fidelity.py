"""Fidelity benchmark: does measuring through vtax change what is measured?

Runs a bare `iperf3 -c` on loopback and the same iperf3 workload through vtax's embedded engine,
interleaved in pairs (the order alternates to cancel drift), and prints one JSON object with the
median throughput ratio vtax/bare (goal >= 0.98), the geometric mean ratio with its 95 % CI (whether
a shortfall is a cost or noise), and the CPU seconds the agent process itself spent per trial.
Both sides turn iperf3's per-second intervals into samples with `workloads.iperf3.parse_report`
and average `throughput_gbps` over all of them, so they are computed identically.

    .venv/bin/python benchmarks/fidelity.py --seconds 5 --streams 1   # pairs until the ratio is known to ±2 %
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _pairs import add_pair_options, check_pair_options, interleaved, ratio_summary

from controller.engine import EmbeddedEngine
from controller.runloop import RunLoop
from controller.spec import parse
from controller.store import Store
from workloads import iperf3

GOAL = 0.98
HOST = "127.0.0.1"

SPEC = """\
name: fidelity
description: one iperf3 client against one server on loopback, no appliance
agents:
  - {{name: client, address: "{host}"}}
  - {{name: server, address: "{host}"}}
conditions:
  - {{name: direct, baseline: true}}
workloads:
  - kind: iperf3
    name: tcp
    agents: [client]
    server: server
    params: {{protocol: tcp, streams: {streams}}}
timing: {{warmup: 0, steady: {seconds}, cooldown: 0, lead: 0.5}}
repetitions: 1
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mean_throughput(samples: list[dict[str, Any]]) -> float:
    values = [s["values"]["throughput_gbps"] for s in samples if "throughput_gbps" in s["values"]]
    if not values:
        raise RuntimeError("no throughput samples")
    return statistics.fmean(values)


def bare_trial(program: str, seconds: int, streams: int) -> float:
    """One bare iperf3 client run; mean Gbit/s over its intervals.

    The server side is vtax's own one-off server, the same as on the vtax side, so the pair differs
    only in how the client is run.
    """
    params = iperf3.Iperf3Params(streams=streams)
    target = iperf3.serve(params, bind=HOST, deadline=time.time() + seconds + 30)
    cmd = [program, "-c", HOST, "-p", str(target["port"]), "-t", str(seconds), "-i", "1", "-J", "-P", str(streams)]
    client = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=seconds + 30, check=False)
    report = json.loads(client.stdout)
    if "error" in report:
        raise RuntimeError(f"bare iperf3: {report['error']}")
    return mean_throughput(list(iperf3.parse_report(report, time.time())))


def vtax_trial(spec_text: str, store: Store) -> tuple[float, float, float]:
    """One trial through the embedded engine: (mean Gbit/s over all samples, agent CPU s, wall s)."""
    experiment = parse(spec_text, "<fidelity>")
    began = time.monotonic()
    run_id = RunLoop(
        experiment, store=store, engine=EmbeddedEngine.for_experiment(experiment), spec_path=None
    ).execute()
    wall = time.monotonic() - began
    trials = store.trials(run_id)
    bad = [t for t in trials if t["status"] != "ok"]
    if bad or not trials:
        reason = bad[0]["reason"] if bad else "no trial stored"
        raise RuntimeError(f"vtax trial failed: {reason}")
    cpu = sum(r["agent_cpu_s"] or 0.0 for r in store.agent_results(run_id))
    return mean_throughput(store.samples(run_id)), cpu, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_options(parser)
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 duration of every measurement")
    parser.add_argument("--streams", type=int, default=1, help="parallel iperf3 streams (-P)")
    args = parser.parse_args()
    check_pair_options(parser, args)
    if args.seconds < 1:
        parser.error(f"--seconds must be at least 1 (got {args.seconds})")
    if not 1 <= args.streams <= 128:
        parser.error(f"--streams must be between 1 and 128 (got {args.streams})")
    program = shutil.which("iperf3")
    if program is None:
        parser.error("iperf3 is not installed (Debian/Ubuntu: apt-get install iperf3)")

    spec_text = SPEC.format(host=HOST, streams=args.streams, seconds=args.seconds)

    def report(i: int, bare_gbps: float, trial: tuple[float, float, float], half: float | None) -> None:
        gbps, cpu_s, wall_s = trial
        known = "–" if half is None else f"±{100 * half:.1f} %"
        log(
            f"pair {i + 1} (at most {args.max_pairs}): bare {bare_gbps:.2f} Gbit/s, vtax {gbps:.2f} Gbit/s,"
            f" agent CPU {cpu_s:.3f} s, vtax wall {wall_s:.2f} s; ratio known to {known}"
        )

    with tempfile.TemporaryDirectory(prefix="vtax-fidelity-") as tmp:
        store = Store(Path(tmp) / "fidelity.db")
        try:
            bare, trials = interleaved(
                lambda: bare_trial(program, args.seconds, args.streams),
                lambda: vtax_trial(spec_text, store),
                lambda b, v: (b, v[0]),
                report,
                min_pairs=args.min_pairs,
                max_pairs=args.max_pairs,
                resolution=args.resolution,
            )
        finally:
            store.close()
    through_vtax = [gbps for gbps, _, _ in trials]
    cpu = [cpu_s for _, cpu_s, _ in trials]
    wall = [wall_s for _, _, wall_s in trials]
    result = {
        "benchmark": "fidelity",
        "pairs": len(bare),
        "seconds": args.seconds,
        "streams": args.streams,
        "bare_gbps": [round(x, 4) for x in bare],
        "vtax_gbps": [round(x, 4) for x in through_vtax],
        **ratio_summary(bare, through_vtax, GOAL, args.resolution),
        "agent_cpu_s_per_trial": {
            "median": round(statistics.median(cpu), 4),
            "max": round(max(cpu), 4),
            "values": [round(x, 4) for x in cpu],
        },
        "vtax_wall_s_per_trial": {
            "median": round(statistics.median(wall), 3),
            "max": round(max(wall), 3),
            "values": [round(x, 3) for x in wall],
        },
        "iperf3_version": iperf3.version(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
