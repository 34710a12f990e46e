"""Fleet cost: the time `vtax deploy` takes to clone, mark, configure and power on N agent VMs, and
`vtax deploy destroy` to remove them, against the vCenter simulator (vtax-vcsim; `make vcsim` builds it).

It does not wait for agents (`--wait 0`): nothing runs inside simulated VMs. Prints one JSON object.

    .venv/bin/python benchmarks/deploy.py --count 100 --hosts 4 [--parallel 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _vcsim import VcSim

VTAX = str(Path(sys.executable).parent / "vtax")


def timed(command: list[str], env: dict[str, str]) -> float:
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed: {done.stderr.strip()[-500:]}")
    return time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    with VcSim(clusters=1, hosts=args.hosts, vms=1, refresh=20) as sim:
        env = {**os.environ, "VTAX_VCENTER_PASSWORD": sim.password}
        vcenter = ["--vcenter", sim.url, "--vcenter-user", sim.user, "--vcenter-insecure"]
        made = timed(
            [VTAX, "deploy", "--template", "DC0_C0_RP0_VM0", "--count", str(args.count), "--cluster", "DC0_C0",
             "--zone", "bench", "--broker", "redis://127.0.0.1:1/0", "--wait", "0", "--parallel",
             str(args.parallel), *vcenter],
            env,
        )  # fmt: skip
        gone = timed([VTAX, "deploy", "destroy", "--parallel", str(args.parallel), *vcenter], env)
    result = {
        "benchmark": "deploy",
        "vms": args.count,
        "hosts": args.hosts,
        "parallel": args.parallel,
        "deploy_s": round(made, 2),
        "destroy_s": round(gone, 2),
        "deploy_s_per_vm": round(made / args.count, 3),
        "destroy_s_per_vm": round(gone / args.count, 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
