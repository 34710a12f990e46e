"""Dispatch cost: controller time to plan, dispatch and collect one no-op trial across 200 agents.

200 agents are served by a few `vtax agent` worker processes (each consumes many agent queues) behind a
local redis-server. Each trial runs the `noop` workload; the controller's own time per trial is the
wall time between consecutive trial ends minus the lead and the trial's duration, i.e. planning,
dispatch, collection and storing. Prints one JSON object (goal: <= 1 s per trial).

    .venv/bin/python benchmarks/dispatch.py --agents 200 --workers 4 --trials 5 [--secure]

With --secure it runs again over TLS, with ACL users and signed tasks (as docs/how-to/secure-deployment.md sets
up), and prints the ratios secure / plain.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _local_cluster import local_cluster, noop_experiment

from controller.distributed import CeleryEngine
from controller.events import Events
from controller.runloop import RunLoop
from controller.store import Store

GOAL_S = 1.0
LEAD_S = 0.5
STEADY_S = 0.2


def measure(agents: int, workers: int, trials: int, *, secure: bool) -> dict[str, object]:
    """One run of `trials` no-op trials; `secure`: over TLS with ACL users and signed tasks."""
    names = [f"a{i}" for i in range(1, agents + 1)]
    spec = noop_experiment("dispatch", names, steady=STEADY_S, lead=LEAD_S, trials=trials)
    marks: list[float] = []
    events = Events()
    events.run_start.add_listener(lambda **_: marks.append(time.monotonic()))
    events.trial_end.add_listener(lambda **_: marks.append(time.monotonic()))
    groups = [names[i::workers] for i in range(workers)]
    with local_cluster(groups, secure=secure) as broker, tempfile.TemporaryDirectory() as tmp:
        engine = CeleryEngine(broker, names)
        began = time.monotonic()
        run_id = RunLoop(spec, store=Store(Path(tmp) / "d.db"), engine=engine, spec_path=None, events=events).execute()
        statuses = {t["status"] for t in Store(Path(tmp) / "d.db").trials(run_id)}
    overhead = [b - a - LEAD_S - STEADY_S for a, b in itertools.pairwise(marks)]
    return {
        "trial_statuses": sorted(statuses),
        "connect_and_clock_sync_s": round(marks[0] - began, 3),
        "controller_s_per_trial": {
            "median": round(statistics.median(overhead), 3),
            "max": round(max(overhead), 3),
            "values": [round(x, 3) for x in overhead],
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument(
        "--secure", action="store_true", help="also run over TLS with ACL users and signed tasks, and compare"
    )
    args = parser.parse_args()
    if not args.secure:
        plain = measure(args.agents, args.workers, args.trials, secure=False)
        median = plain["controller_s_per_trial"]["median"]  # type: ignore[index]
        result = {"benchmark": "dispatch", "agents": args.agents, "workers": args.workers, "trials": args.trials}
        print(json.dumps({**result, **plain, "goal_s": GOAL_S, "meets_goal": median <= GOAL_S}))
        return 0
    # plain, secure, secure, plain: what drifts over the runs (the box warming up) weighs on both alike
    runs = {False: [], True: []}  # type: dict[bool, list[dict[str, object]]]
    for secure in (False, True, True, False):
        runs[secure].append(measure(args.agents, args.workers, args.trials, secure=secure))

    def pooled(found: list[dict[str, object]]) -> dict[str, float]:
        trials = [x for run in found for x in run["controller_s_per_trial"]["values"]]  # type: ignore[index]
        syncs = [float(run["connect_and_clock_sync_s"]) for run in found]  # type: ignore[arg-type]
        return {
            "controller_s_per_trial": statistics.median(trials),
            "connect_and_clock_sync_s": statistics.median(syncs),
        }

    plain, secure = pooled(runs[False]), pooled(runs[True])
    result = {
        "benchmark": "dispatch",
        "agents": args.agents,
        "workers": args.workers,
        "trials": args.trials,
        "order": "plain, secure, secure, plain",
        "plain": {k: round(v, 3) for k, v in plain.items()},
        "secure": {k: round(v, 3) for k, v in secure.items()},
        "secure_vs_plain": {k: round(secure[k] / plain[k], 2) for k in plain},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
