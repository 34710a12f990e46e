"""Dispatch cost: controller time to plan, dispatch and collect one no-op trial across 200 agents.

200 agents are served by a few `vtax agent` worker processes (each consumes many agent queues) behind a
local redis-server. Each trial runs the `noop` workload; the controller's own time per trial is the
wall time between consecutive trial ends minus the lead and the trial's duration, i.e. planning,
dispatch, collection and storing. Prints one JSON object (goal: <= 1 s per trial).

    .venv/bin/python benchmarks/dispatch.py --agents 200 --workers 4 --trials 5
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    names = [f"a{i}" for i in range(1, args.agents + 1)]
    spec = noop_experiment("dispatch", names, steady=STEADY_S, lead=LEAD_S, trials=args.trials)
    marks: list[float] = []
    events = Events()
    events.run_start.add_listener(lambda **_: marks.append(time.monotonic()))
    events.trial_end.add_listener(lambda **_: marks.append(time.monotonic()))
    workers = [names[i :: args.workers] for i in range(args.workers)]
    with local_cluster(workers) as broker, tempfile.TemporaryDirectory() as tmp:
        engine = CeleryEngine(broker, names)
        began = time.monotonic()
        run_id = RunLoop(spec, store=Store(Path(tmp) / "d.db"), engine=engine, spec_path=None, events=events).execute()
        statuses = {t["status"] for t in Store(Path(tmp) / "d.db").trials(run_id)}
    overhead = [b - a - LEAD_S - STEADY_S for a, b in itertools.pairwise(marks)]
    result = {
        "benchmark": "dispatch",
        "agents": args.agents,
        "workers": args.workers,
        "trials": args.trials,
        "trial_statuses": sorted(statuses),
        "connect_and_clock_sync_s": round(marks[0] - began, 3),
        "controller_s_per_trial": {
            "median": round(statistics.median(overhead), 3),
            "max": round(max(overhead), 3),
            "values": [round(x, 3) for x in overhead],
        },
        "goal_s": GOAL_S,
        "meets_goal": statistics.median(overhead) <= GOAL_S,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
