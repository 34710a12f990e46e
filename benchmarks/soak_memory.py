"""Whether a long soak's controller and agents hold their memory: a real soak, compressed, with RSS over time.

Runs `vtax run` on an embedded soak of `--segments` segments of `--segment` s (iperf3 on loopback at a fixed
bitrate), and reads the resident memory of the controller and of each of its agent processes every `--every`
s, once its start-up (`--settle` s) is over. A 24 h soak of 60 s segments has 1,440 segments; this runs the
same code path per segment, with shorter segments. The issue's target: RSS at the end within 10 % of the
first hour's, here of the first tenth of the soak.

    .venv/bin/python benchmarks/soak_memory.py [--segments 120] [--segment 5] [--every 5]

Prints one JSON object: per process (the controller, each agent), the median RSS of the first and of the last
tenth of the soak, their ratio, and the readings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

VTAX = str(Path(sys.executable).parent / "vtax")

SPEC = """\
name: soak-memory
agents: [{{name: client}}, {{name: server}}]
conditions: [{{name: direct, baseline: true}}]
workloads: [{{kind: iperf3, name: tcp, agents: [client], server: server, params: {{bitrate: 1G}}}}]
soak: {{duration: {duration:g}, segment: {segment:g}}}
"""


def _rss_mb(proc: psutil.Process) -> float | None:
    try:
        return proc.memory_info().rss / 2**20
    except psutil.Error:
        return None


def _role(proc: psutil.Process) -> str | None:
    """An embedded agent: a child the controller spawned through multiprocessing (not its resource tracker)."""
    try:
        command = " ".join(proc.cmdline())
    except psutil.Error:
        return None
    return f"agent pid {proc.pid}" if "spawn_main" in command else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=120)
    parser.add_argument("--segment", type=float, default=5.0)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between RSS readings")
    parser.add_argument("--settle", type=float, default=15.0, help="start-up seconds not read (imports, clocks)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vtax-soak-memory-"))
    spec = work / "soak.yaml"
    spec.write_text(SPEC.format(duration=args.segments * args.segment, segment=args.segment), encoding="utf-8")
    env = {
        "PATH": f"{Path(VTAX).parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "VTAX_STORE": str(work / "runs.db"),
        "XDG_STATE_HOME": str(work / "state"),
    }
    began = time.monotonic()
    controller = psutil.Popen(
        [VTAX, "run", str(spec), "--json", str(work / "result.json")],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    readings: dict[str, list[tuple[float, float]]] = {}
    time.sleep(args.settle)
    while controller.poll() is None:
        at = time.monotonic() - began
        for proc in [controller, *controller.children(recursive=False)]:
            role = "controller" if proc.pid == controller.pid else _role(proc)
            rss = _rss_mb(proc)
            if role is not None and rss is not None:
                readings.setdefault(role, []).append((round(at, 1), round(rss, 1)))
        time.sleep(args.every)
    wall = time.monotonic() - began
    result = json.loads((work / "result.json").read_text()) if (work / "result.json").exists() else {}
    processes = {}
    for role, series in readings.items():
        tenth = max(1, len(series) // 10)
        first = statistics.median(rss for _, rss in series[:tenth])
        last = statistics.median(rss for _, rss in series[-tenth:])
        processes[role] = {"first_tenth_mb": first, "last_tenth_mb": last, "ratio": round(last / first, 3)}
    print(
        json.dumps(
            {
                "segments": args.segments,
                "segment_s": args.segment,
                "wall_s": round(wall, 1),
                "exit": controller.returncode,
                "segments_measured": (result.get("soak") or {}).get("segments_measured"),
                "agent_memory_in_store": {
                    agent: {k: grown[k] for k in ("first_hour", "end", "ratio")}
                    for agent, grown in ((result.get("soak") or {}).get("memory") or {}).items()
                },
                "processes": processes,
                "target_ratio": 1.1,
                "readings": readings,
            }
        )
    )


if __name__ == "__main__":
    main()
