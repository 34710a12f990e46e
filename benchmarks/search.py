"""How many trials, and how much wall time, a capacity search needs to reach 1 % precision against a known cap.

Side by side over the same simulated devices (a sharp cap whose pass/fail edge wobbles by `--noise` % from
trial to trial, seeded), three schemes:

- `bisection`: RFC 2544's classic binary search, halving [low, high] arithmetically from the start;
- `vtax`: vtax's own `Bracket` (the upper bound, the lower bound, geometric halving while the bracket spans
  more than a factor of 2, then arithmetic, then the final repetitions);
- `multi_phase`: the same steps as `vtax`, timed as MLRsearch would run them: probes short (`--short` s of
  steady phase) while the bracket is wider than 4 × the precision, full trials once it is narrow and for the
  finals. vtax does not run this scheme; its wall time here is modelled from the same trial counts, as if a
  short probe judged as well as a full one (MLRsearch relies on that only while the bracket is wide).

Wall time per trial is warm-up + steady + cool-down + lead + `--dead` (the controller's time between trials,
design.md: 56 ms). With `--lab BROKER` it also runs one real `vtax run` search in the namespace lab (root, `vtax
lab up --guests 2 --agents` first) against a tbf cap and reports its trials, wall time and found capacity
against the cap's expected UDP goodput. Prints one JSON object.

    .venv/bin/python benchmarks/search.py [--devices 200] [--noise 0.5] [--precision 1]
    .venv/bin/python benchmarks/search.py --lab rediss://198.19.255.1:6390/0 --rate 500   # with its broker.env loaded
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
from controller.search import Bounds, Bracket

Device = Callable[[float], bool]
Step = tuple[float, bool, float]  # load, passed, bracket width (relative) before the trial


def _device(cap: float, noise_pct: float, rng: random.Random) -> Device:
    return lambda load: load <= cap * math.exp(rng.gauss(0, noise_pct / 100))


def _vtax(bounds: Bounds, device: Device) -> tuple[list[Step], float | None]:
    bracket = Bracket(bounds)
    steps: list[Step] = []
    while (step := bracket.next_step()) is not None:
        load, final = step
        width = bracket.failed / bracket.passed - 1 if bracket.passed and bracket.failed else math.inf
        passed = device(load)
        bracket.record(load, final, passed, None)
        steps.append((load, passed, 0.0 if final else width))
    return steps, bracket.passed if bracket.stop == "found" else None


def _bisection(bounds: Bounds, device: Device) -> tuple[list[Step], float | None]:
    """Written out here, not in vtax: the textbook scheme the benchmark compares against."""
    low, high, steps = bounds.low, bounds.high, []
    while high / low - 1 > bounds.precision_pct / 100 and len(steps) < bounds.max_trials:
        middle = (low + high) / 2
        passed = device(middle)
        steps.append((middle, passed, high / low - 1))
        low, high = (middle, high) if passed else (low, middle)
    finals = [device(low) for _ in range(bounds.final_repetitions)]
    steps += [(low, passed, 0.0) for passed in finals]
    return steps, low if all(finals) else None


def _wall(steps: list[Step], full: float, short: float | None, wide: float, per_trial: float) -> float:
    return sum(per_trial + (short if short is not None and width > wide else full) for _, _, width in steps)


def simulate(args: argparse.Namespace) -> dict[str, object]:
    bounds = Bounds(args.low, args.high, args.precision, 3, 200)
    full = args.warmup + args.steady + args.cooldown
    per_trial = args.lead + args.dead
    rng = random.Random(args.seed)
    runs: dict[str, list[tuple[int, float, float | None]]] = {"bisection": [], "vtax": [], "multi_phase": []}
    caps = []
    for _ in range(args.devices):
        cap = math.exp(rng.uniform(math.log(args.low * 2), math.log(args.high / 2)))
        caps.append(cap)
        for name, scheme, short in (
            ("bisection", _bisection, None),
            ("vtax", _vtax, None),
            ("multi_phase", _vtax, args.short),
        ):
            seeded = random.Random(f"{args.seed}-{cap}")  # the same device noise for every scheme
            steps, found = scheme(bounds, _device(cap, args.noise, seeded))
            wall = _wall(steps, full, short, 4 * args.precision / 100, per_trial)
            runs[name].append((len(steps), wall, found))
    out: dict[str, object] = {}
    for name, results in runs.items():
        errors = [abs(found / cap - 1) * 100 for (_, _, found), cap in zip(results, caps, strict=True) if found]
        out[name] = {
            "trials_mean": round(statistics.fmean(t for t, _, _ in results), 2),
            "trials_max": max(t for t, _, _ in results),
            "wall_s_mean": round(statistics.fmean(w for _, w, _ in results), 1),
            "found_share": round(len(errors) / len(results), 3),
            "error_pct_median": round(statistics.median(errors), 3) if errors else None,
            "within_precision_share": round(sum(e <= args.precision for e in errors) / len(results), 3),
        }
    base = out["bisection"]
    assert isinstance(base, dict)
    for name in ("vtax", "multi_phase"):
        entry = out[name]
        assert isinstance(entry, dict)
        entry["wall_vs_bisection"] = round(entry["wall_s_mean"] / base["wall_s_mean"], 3)
        entry["trials_vs_bisection"] = round(entry["trials_mean"] / base["trials_mean"], 3)
    out["multi_phase"]["modelled"] = True  # type: ignore[index]
    return out


LAB_SPEC = """\
name: search-benchmark
agents: [{{name: g1}}, {{name: g2}}]
conditions:
  - name: capped
    baseline: true
    setup: "vtax lab appliance --rate {rate}"
    teardown: "vtax lab appliance --off"
workloads: [{{kind: iperf3, name: udp, agents: [g1], server: g2, params: {{protocol: udp, window: 4M}}}}]
timing: {{warmup: {warmup}, steady: {steady}, cooldown: {cooldown}, lead: {lead}}}
search:
  workload: udp
  low: {low}
  high: {high}
  precision_pct: {precision}
  final_repetitions: 3
  criteria: {{udp.loss_pct: {{max: 0.5}}}}
"""


def lab(args: argparse.Namespace) -> dict[str, object]:
    """One real search in the lab against a tbf cap: trials, wall time, found against expected goodput."""
    vtax = str(Path(sys.executable).parent / "vtax")
    with tempfile.TemporaryDirectory() as work:
        spec = Path(work) / "spec.yaml"
        high = min(args.high, 1.2)  # under what one iperf3 UDP process sends here (1.3 Gbit/s)
        spec.write_text(LAB_SPEC.format(**{**vars(args), "high": high, "low": min(args.low, high / 4)}))
        out = Path(work) / "result.json"
        began = time.monotonic()
        done = subprocess.run(
            [vtax, "run", str(spec), "--broker", args.lab, "--json", str(out), "--store", str(Path(work) / "r.db")],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.monotonic() - began
        if not out.exists():
            return {"error": done.stderr.strip()[-400:]}
        found = json.loads(out.read_text())["capacity"]["capped"]
    expected = args.rate / 1000 * 1460 / 1502  # iperf3's 1,460-byte datagrams in 1,502-byte frames
    return {
        "rate_mbit": args.rate,
        "expected_gbps": round(expected, 4),
        "found_gbps": found["value"],
        "bracket": found["bracket"],
        "error_pct": None if found["value"] is None else round(100 * (found["value"] / expected - 1), 2),
        "trials": len(found["tried"]),
        "wall_s": round(wall, 1),
        "stop": found["stop"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200, help="simulated devices (caps drawn log-uniformly)")
    parser.add_argument("--noise", type=float, default=0.5, help="trial-to-trial wobble of the cap, %%")
    parser.add_argument("--precision", type=float, default=1.0, help="the bracket's target width, %%")
    parser.add_argument("--low", type=float, default=0.1, help="Gbit/s")
    parser.add_argument("--high", type=float, default=10.0, help="Gbit/s")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--steady", type=float, default=2.0)
    parser.add_argument("--cooldown", type=float, default=0.0)
    parser.add_argument("--lead", type=float, default=1.0)
    parser.add_argument("--dead", type=float, default=0.056, help="controller time between trials, s")
    parser.add_argument("--short", type=float, default=1.0, help="multi_phase: a wide probe's whole trial, s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lab", metavar="BROKER", help="also run one real search in the lab through this broker")
    parser.add_argument("--rate", type=float, default=500, help="--lab: the tbf cap, Mbit/s")
    args = parser.parse_args()
    print(f"simulating {args.devices} devices …", file=sys.stderr)
    result: dict[str, object] = {"simulated": simulate(args), "settings": vars(args)}
    if args.lab:
        print("running one search in the lab …", file=sys.stderr)
        result["lab"] = lab(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
