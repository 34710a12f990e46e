"""How long `vtax show` takes, and how much memory it needs, on a soak's store of a given size.

Builds a synthetic soak store through the store's own writes: `--agents` iperf3 (or HTTP, `--kind http`, each
second with its latency histogram) clients, one sample per second
each, for `--hours` hours in segments of `--segment` s, each segment's values drawn around a level (seeded). Then
it times `vtax show RUN --json` on it in a child process and reads the child's peak RSS. The issue's target is a
24 h × 100-agent soak (8.64 M samples) in at most 30 s and 1 GiB.

    .venv/bin/python benchmarks/soak_scale.py [--kind iperf3|http] [--agents 100] [--hours 24] [--keep DIR]

Prints one JSON object: the store's size in bytes and per sample, how long building it took, and `vtax show`'s
wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))
from controller.facts import trial_facts
from controller.spec import parse
from controller.store import Store

VTAX = str(Path(sys.executable).parent / "vtax")


def _spec(kind: str, agents: int, hours: float, segment: float) -> str:
    clients = ", ".join(f"a{n}" for n in range(agents))
    return f"""
name: soak-scale
agents: [{", ".join(f"{{name: a{n}}}" for n in range(agents))}, {{name: server}}]
conditions: [{{name: base, baseline: true}}]
workloads: [{{kind: {kind}, name: load, agents: [{clients}], server: server}}]
soak: {{duration: {hours * 3600:g}, segment: {segment:g}}}
"""


# an HTTP sample's latency histogram: 1,000 requests a second around 1 ms (log-normal, σ 0.3), as the locust
# child buckets them; its spread (~180 buckets of 1 %) is what a real loopback run shows
_BUCKETS = np.arange(int(math.log(1000) * 100) - 90, int(math.log(1000) * 100) + 90)
_WEIGHTS = np.exp(-(((_BUCKETS / 100 - math.log(1000)) / 0.3) ** 2) / 2)
_WEIGHTS /= _WEIGHTS.sum()


def _values(kind: str, level: float, rng: random.Random, counts: np.random.Generator) -> dict[str, Any]:
    """One second of one agent: iperf3's fields, or the HTTP workload's with its histogram."""
    if kind == "iperf3":
        return {
            "values": {
                "throughput_gbps": level + rng.gauss(0, 0.2),
                "retransmits": float(rng.randrange(3)),
                "rtt_ms": 0.05 + rng.random() / 100,
                "cwnd_kb": 1100.0 + rng.random() * 100,
            }
        }
    drawn = counts.multinomial(1000, _WEIGHTS)
    return {
        "values": {
            "rps": 1000.0,
            "throughput_gbps": level / 1000,
            "failures_per_s": 0.0,
            "generator_cpu_pct": 40.0 + rng.random() * 5,
        },
        "histogram": {str(int(k)): int(c) for k, c in zip(_BUCKETS, drawn, strict=True) if c},
    }


def build(path: Path, kind: str, agents: int, hours: float, segment: float, seed: int) -> tuple[str, int]:
    """A completed soak run of that size in a new store at `path`; returns its id and its number of samples."""
    experiment = parse(_spec(kind, agents, hours, segment), "<soak_scale>")
    assert experiment.soak is not None
    store = Store(path)
    run_id = "20261203-000000-5ca1"
    store.create_run(
        run_id=run_id, name=experiment.name, engine="embedded", spec_path=None, spec=experiment.model_dump(mode="json")
    )
    rng = random.Random(seed)
    counts = np.random.default_rng(seed)
    start = 1_800_000_000.0
    count = 0
    for idx in range(experiment.soak.segments):
        begins = start + idx * segment
        segment_samples = []
        for n in range(agents):
            level = 9.0 + rng.gauss(0, 0.3)
            samples = [{"t": begins + s, "dt": 1.0, **_values(kind, level, rng, counts)} for s in range(int(segment))]
            store.add_agent_result(run_id, idx, {
                "agent": f"a{n}", "workload": "load", "status": "ok", "reason": "", "samples": samples,
                "summary": {}, "started_at": begins, "ended_at": begins + segment, "agent_rss_mb": 45.0,
            })  # fmt: skip
            segment_samples += [{**s, "agent": f"a{n}", "workload": "load"} for s in samples]
            count += len(samples)
        store.put_facts(run_id, idx, trial_facts(experiment, begins, segment_samples, []))  # as the run loop does
        store.add_trial(run_id, {
            "idx": idx, "condition": "base", "repetition": idx + 1, "status": "ok", "reason": "",
            "start_at": begins, "deadline": begins + segment + 10, "ended": begins + segment,
        })  # fmt: skip
    store.finish_run(run_id, "completed")
    store.close()
    return run_id, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("iperf3", "http"), default="iperf3", help="the agents' workload")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--hours", type=float, default=24)
    parser.add_argument("--segment", type=float, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="build the store in this directory and keep it")
    args = parser.parse_args()
    where = args.keep or Path(tempfile.mkdtemp(prefix="vtax-soak-scale-"))
    where.mkdir(parents=True, exist_ok=True)
    path = where / "soak.db"
    path.unlink(missing_ok=True)
    began = time.monotonic()
    run_id, samples = build(path, args.kind, args.agents, args.hours, args.segment, args.seed)
    built = time.monotonic() - began
    size = sum(p.stat().st_size for p in where.glob("soak.db*"))
    began = time.monotonic()
    shown = subprocess.run(
        [VTAX, "show", run_id, "--store", str(path), "--json", str(where / "result.json")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    show_s = time.monotonic() - began
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "kind": args.kind,
                "agents": args.agents,
                "hours": args.hours,
                "segment_s": args.segment,
                "samples": samples,
                "store_bytes": size,
                "bytes_per_sample": round(size / samples, 1),
                "build_s": round(built, 1),
                "show_exit": shown.returncode,
                "show_s": round(show_s, 1),
                "show_peak_rss_mb": round(peak_mb),
                "targets": {"show_s": 30, "show_peak_rss_mb": 1024},
                "store": str(path) if args.keep else None,
            }
        )
    )


if __name__ == "__main__":
    main()
