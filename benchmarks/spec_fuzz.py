"""Spec fuzzing: how `vtax validate` answers hundreds of malformed specs, as a reviewer's fuzz run would count it.

Each case is a file given to the real `vtax validate` (a process of its own, killed after 20 s). The cases: the
good spec with one value replaced by a hostile one (a boolean, NaN, infinity, a 5,000-digit number, a NUL, an
option-looking host, `1:30`, a 5,000-character string, a list, a mapping, null) at every place a value sits;
an unknown key at every mapping; and the named attacks (alias bomb, deep nesting, unhashable key, a FIFO,
/dev/zero, a 50 MB file). Prints one JSON object: how many exited 2 with one line of at most 300 characters,
how many crashed (a traceback or another exit code), hung, or were accepted (exit 0), with the accepted cases
listed so a person can judge them, and the slowest answer.

    .venv/bin/python benchmarks/spec_fuzz.py [--jobs 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent.parent))
from tests.test_spec_fuzz import GOOD, NAMED, PATHS, _alias_bomb, _named_text, _set

VTAX = str(Path(sys.executable).parent / "vtax")
HUGE = "HUGE_NUMBER_SENTINEL"  # PyYAML cannot write a 5,000-digit number: its digits are put in after dumping
HOSTILE: list[Any] = [
    True, float("nan"), float("inf"), HUGE, -1, "x\x00y", "--logfile=/tmp/x", "user@host:80", "1:30",
    "a" * 5000, [1, 2], {"k": 1}, None,
]  # fmt: skip


def cases(directory: Path) -> list[tuple[str, Path]]:
    """(name, file) of every case, written under `directory`."""
    made: list[tuple[str, str]] = []
    containers: set[tuple[Any, ...]] = set()
    for path in PATHS:
        for value in HOSTILE:
            document = copy.deepcopy(GOOD)
            _set(document, path, value)
            made.append((f"{'.'.join(map(str, path))} = {str(value)[:20]!r}", _dump(document)))
        holder: Any = GOOD
        for part in path[:-1]:
            holder = holder[part]
        if isinstance(holder, dict) and path[:-1] not in containers:
            containers.add(path[:-1])
            document = copy.deepcopy(GOOD)
            _set(document, (*path[:-1], "unknown_key"), 1)
            made.append((f"{'.'.join(map(str, path[:-1]))}.unknown_key", _dump(document)))
    made += [(name, _named_text(template)) for name, (template, _) in NAMED.items()]
    made.append(("alias bomb, 12 levels", _alias_bomb(12)))
    files = []
    for number, (name, text) in enumerate(made):
        target = directory / f"case-{number}.yaml"
        target.write_text(text, encoding="utf-8")
        files.append((name, target))
    fifo = directory / "fifo.yaml"
    os.mkfifo(fifo)
    huge = directory / "huge.yaml"
    huge.write_text("name: x\n" + "# padding to 50 MB\n" * 2_750_000)
    return [*files, ("a FIFO", fifo), ("/dev/zero", Path("/dev/zero")), ("a 50 MB file", huge)]


def _dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, allow_unicode=True, width=10**6).replace(HUGE, "9" * 5000)


def judge(case: tuple[str, Path]) -> dict[str, Any]:
    name, path = case
    began = time.monotonic()
    try:
        done = subprocess.run([VTAX, "validate", str(path)], capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return {"case": name, "outcome": "hang", "seconds": 20.0}
    seconds = time.monotonic() - began
    lines = done.stderr.strip().splitlines()
    if done.returncode == 0:
        outcome = "accepted"
    elif done.returncode == 2 and len(lines) == 1 and len(lines[0]) <= 300 and "Traceback" not in done.stderr:
        outcome = "refused"
    elif done.returncode == 2:
        outcome = "refused_badly"  # exit 2, but the message is long or several lines
    else:
        outcome = "crashed"
    return {"case": name, "outcome": outcome, "seconds": round(seconds, 2), "line": (lines or [""])[-1][:160]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        all_cases = cases(Path(work))
        with ThreadPoolExecutor(args.jobs) as pool:
            judged = list(pool.map(judge, all_cases))
    counts: dict[str, int] = {}
    for item in judged:
        counts[item["outcome"]] = counts.get(item["outcome"], 0) + 1
    print(
        json.dumps(
            {
                "cases": len(judged),
                "counts": counts,
                "slowest_s": max(item["seconds"] for item in judged),
                "not_refused": [item for item in judged if item["outcome"] != "refused"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
