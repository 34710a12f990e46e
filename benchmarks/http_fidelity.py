"""HTTP fidelity: does running locust through vtax change the request rate it reaches?

Interleaved pairs (the order alternates to cancel drift): a bare `locust --headless` run and the same
GET scenario as vtax's `http` workload in the embedded engine, each against a fresh target of the
same kind (nginx where installed, else vtax's Python target).
Prints one JSON object with the median RPS ratio vtax/bare (goal >= 0.97) and its geometric mean with
a 95 % CI.

    .venv/bin/python benchmarks/http_fidelity.py --seconds 5 --users 4   # pairs until the ratio is known to ±2 %
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _pairs import add_pair_options, check_pair_options, interleaved, ratio_summary

from controller.engine import EmbeddedEngine
from controller.runloop import RunLoop
from controller.spec import parse
from controller.store import Store
from workloads import http

GOAL = 0.97
LOCUSTFILE = """
from locust import FastHttpUser, constant, task

class Get(FastHttpUser):
    wait_time = constant(0)

    @task
    def one(self):
        self.client.get("/{size}")
"""


def bare_rps(locustfile: Path, seconds: int, users: int, size: str) -> float:
    """One bare headless locust run against a fresh target: requests / run time."""
    target = http.serve(http.HttpParams(), bind="127.0.0.1", deadline=time.time() + seconds + 30)
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "--host",
        f"http://127.0.0.1:{target['port']}",
        "--json",
        "--only-summary",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    entries = json.loads(out.stdout)
    return sum(e["num_requests"] for e in entries) / seconds


def vtax_rps(seconds: int, users: int, size: str, store: Store) -> float:
    spec = parse(
        json.dumps(
            {
                "name": "http-fidelity",
                "agents": [{"name": "client"}, {"name": "server"}],
                "conditions": [{"name": "direct", "baseline": True}],
                "workloads": [
                    {
                        "kind": "http",
                        "agents": ["client"],
                        "server": "server",
                        "params": {"scenario": "get", "object_size": size, "users": users},
                    }
                ],
                "timing": {"warmup": 0, "steady": seconds, "cooldown": 0, "lead": 0.5},
                "repetitions": 1,
            }
        ),
        "<http_fidelity>",
    )
    run_id = RunLoop(spec, store=store, engine=EmbeddedEngine.for_experiment(spec), spec_path=None).execute()
    samples = store.samples(run_id)
    return sum(s["values"]["rps"] * s["dt"] for s in samples) / sum(s["dt"] for s in samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_options(parser)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--size", default="16k", choices=sorted(http.SIZES))
    args = parser.parse_args()
    check_pair_options(parser, args)
    with tempfile.TemporaryDirectory(prefix="vtax-http-fidelity-") as tmp:
        locustfile = Path(tmp) / "get.py"
        locustfile.write_text(LOCUSTFILE.format(size=args.size))
        store = Store(Path(tmp) / "h.db")
        bare, through_vtax = interleaved(
            lambda: bare_rps(locustfile, args.seconds, args.users, args.size),
            lambda: vtax_rps(args.seconds, args.users, args.size, store),
            lambda b, v: (b, v),
            lambda i, b, v, half: print(
                f"pair {i + 1}: bare {b:.0f} rps, vtax {v:.0f} rps; ratio known to "
                + ("–" if half is None else f"±{100 * half:.1f} %"),
                file=sys.stderr,
            ),
            min_pairs=args.min_pairs,
            max_pairs=args.max_pairs,
            resolution=args.resolution,
        )
    result = {
        "benchmark": "http_fidelity",
        "pairs": len(bare),
        "seconds": args.seconds,
        "users": args.users,
        "object_size": args.size,
        "bare_rps": [round(x, 1) for x in bare],
        "vtax_rps": [round(x, 1) for x in through_vtax],
        **ratio_summary(bare, through_vtax, GOAL, args.resolution),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
