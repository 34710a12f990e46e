"""vSphere run cadence: how much longer a run with --vcenter takes than its trials, against a vCenter
simulator at vCenter's 20 s realtime interval.

vCenter publishes a sample only once its 20 s are over. Side by side in one run: the same spec without
--vcenter (its trials and vtax's own per-trial work) and with it. The goal: with a cool-down of 20 s, the
next trial starts at once and only the last trial's counters are waited for (at most ~20 s per run, not
per trial). Prints one JSON object.

    .venv/bin/python benchmarks/vsphere_cadence.py --trials 4 --cooldown 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _vcsim import VcSim

VTAX = str(Path(sys.executable).parent / "vtax")
SPEC = """
name: cadence
agents: [{{name: a1, vm: DC0_C0_RP0_VM0}}]
conditions: [{{name: base, baseline: true}}, {{name: other}}]
workloads: [{{kind: cpu, agents: [a1], params: {{percent: 10}}}}]
timing: {{warmup: 0.5, steady: 2, cooldown: {cooldown}, lead: 0.5}}
repetitions: {repetitions}
"""


def timed_run(spec: Path, folder: Path, *flags: str) -> float:
    """Seconds one `vtax run` takes; a failed run is an error, not a number."""
    began = time.perf_counter()
    done = subprocess.run(
        [VTAX, "run", str(spec), "--store", str(folder / "vtax.db"), *flags], capture_output=True, text=True
    )
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"vtax run failed ({done.returncode}): {done.stderr.strip()}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4, help="trials per run (an even number)")
    parser.add_argument("--cooldown", type=float, default=20.0, help="cool-down of each trial, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, VcSim(clusters=1, hosts=1, vms=1, refresh=20) as sim:
        folder = Path(tmp)
        spec = folder / "spec.yaml"
        spec.write_text(SPEC.format(cooldown=args.cooldown, repetitions=max(1, args.trials // 2)))
        bare = timed_run(spec, folder)
        vcenter = timed_run(
            spec, folder, "--vcenter", sim.url, "--vcenter-user", sim.user, "--vcenter-password", sim.password,
            "--vcenter-insecure",
        )  # fmt: skip
    trials = 2 * max(1, args.trials // 2)
    print(
        json.dumps(
            {
                "trials": trials,
                "trial_s": 0.5 + 2 + args.cooldown,
                "interval_s": 20,
                "run_s": round(bare, 1),
                "run_with_vcenter_s": round(vcenter, 1),
                "extra_s": round(vcenter - bare, 1),
                "extra_per_trial_s": round((vcenter - bare) / trials, 2),
                "ratio": round(vcenter / bare, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
