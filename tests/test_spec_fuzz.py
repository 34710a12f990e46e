"""Malformed specs, generated and named: every one is refused with exit 2 and one short line naming the file,
the field and the reason, within 2 s; none hangs, none crashes with a traceback, none is accepted."""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import spec
from controller.errors import MAX_LINE, SpecError
from tests.conftest import Vtax

GOOD = {
    "name": "fuzz",
    "agents": [{"name": "client"}, {"name": "server", "address": "127.0.0.1"}],
    "conditions": [{"name": "base", "baseline": True, "setup": ["true"]}, {"name": "other"}],
    "workloads": [
        {"kind": "iperf3", "agents": ["client"], "server": "server", "params": {"streams": 2, "bitrate": "1G"}},
        {"kind": "http", "agents": ["client"], "server": "server", "params": {"users": 4, "spawn_rate": 10}},
        {"kind": "cpu", "agents": ["client"], "params": {"workers": 1, "percent": 50, "cores": [0]}},
    ],
    "timing": {"warmup": 1, "steady": 2, "cooldown": 0.5, "grace": 3, "lead": 0.5},
    "repetitions": 2,
    "hook_timeout": 30,
    "sla": {"iperf3.throughput_gbps": {"min": 1, "max": 100}},
}
BUDGET_S = 2.0


def refused_properly(text: str, source: str = "fuzz.yaml") -> SpecError | None:
    """Parse `text`; a refusal must be a SpecError of one short line, and no parse may take over BUDGET_S."""
    began = time.monotonic()
    try:
        spec.parse(text, source)
        error = None
    except SpecError as exc:
        error = exc
    took = time.monotonic() - began
    assert took < BUDGET_S, f"took {took:.1f} s"
    if error is not None:
        message = str(error)
        assert error.exit_code == 2 and "\n" not in message and len(message) <= MAX_LINE, message
        assert message.startswith(source)
    return error


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in the spec a value sits, containers included."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


PATHS = _paths(GOOD)
BAD_VALUES = st.one_of(
    st.booleans(),
    st.just(float("nan")),
    st.just(float("inf")),
    st.just(-float("inf")),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.just("x\x00y"),
    st.just("--logfile=/tmp/x"),
    st.just("user@host:80"),
    st.just("1:30"),
    st.just("a" * 5000),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
    st.none(),
)


def _set(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    holder: Any = document
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = value


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), BAD_VALUES)
def test_a_spec_with_any_value_replaced_is_refused_in_one_line_or_valid(path: tuple[Any, ...], value: Any) -> None:
    document = copy.deepcopy(GOOD)
    _set(document, path, value)
    error = refused_properly(yaml.safe_dump(document, allow_unicode=True))
    if error is None:  # accepted: then it must be a spec the tools can run with sane numbers
        experiment = spec.parse(yaml.safe_dump(document, allow_unicode=True))
        assert experiment.timing.duration < 10**6 and experiment.hook_timeout <= 86400


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), st.text(min_size=1, max_size=12))
def test_a_spec_with_an_unknown_key_anywhere_is_refused_naming_it(path: tuple[Any, ...], key: str) -> None:
    document = copy.deepcopy(GOOD)
    holder: Any = document
    for part in path[:-1]:
        holder = holder[part]
    if not isinstance(holder, dict) or key in holder:
        return
    holder[key] = 1
    error = refused_properly(yaml.safe_dump(document, allow_unicode=True))
    assert error is not None and error.field, "an unknown key is refused, naming where it is"


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_refused_in_one_line(text: str) -> None:
    assert refused_properly(text) is not None or text.strip() == ""


def _alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nname: *a{levels - 1}\n"


NAMED = {
    "unhashable key": ("? [a, b]\n: 1\nname: x\n", "cannot be a key"),
    "an integer of 5,000 digits": ("name: x\nrepetitions: " + "9" * 5000 + "\n", "malformed YAML"),
    "1,000 levels of nesting": ("name: " + "[" * 1000 + "]" * 1000 + "\n", "nested more than"),
    "an alias bomb": (_alias_bomb(9), "alias bomb"),
    "a bool for a number": (yaml.safe_dump({**GOOD, "repetitions": True}), "repetitions: expected a number"),
    "NaN SLA bound": (yaml.safe_dump({**GOOD, "sla": {"iperf3.throughput_gbps": {"min": float("nan")}}}), "sla"),
    "infinite spawn rate": ("SPAWN", "spawn_rate"),
    "min above max": (
        yaml.safe_dump({**GOOD, "sla": {"iperf3.throughput_gbps": {"min": 5, "max": 1}}}),
        "min 5 is above max 1",
    ),
    "negative cores": ("CORES", "cores"),
    "a NUL in a hook": (
        yaml.safe_dump({**GOOD, "conditions": [{"name": "b", "baseline": True, "setup": "a\x00b"}]}),
        "NUL",
    ),
    "infinite hook timeout": (
        "name: x\nhook_timeout: .inf\n"
        + yaml.safe_dump({k: v for k, v in GOOD.items() if k not in ("name", "hook_timeout")}),
        "hook_timeout",
    ),
    "a host that reads as an option": ("TARGET--logfile=/tmp/x:5201", "target"),
    "port 99999": ("TARGET127.0.0.1:99999", "target"),
    "user@host in a URL": ("HTTPhttp://user@127.0.0.1:80", "target"),
    "1:30 is not 90": (
        "name: x\nhook_timeout: 1:30\n"
        + yaml.safe_dump({k: v for k, v in GOOD.items() if k not in ("name", "hook_timeout")}),
        "hook_timeout",
    ),
    "an unknown key with [": (yaml.safe_dump({**GOOD, "timing": {**GOOD["timing"], "a[b]": 1}}), "timing.a[b]"),
    "an unknown key named like a kind": (
        yaml.safe_dump({**GOOD, "timing": {**GOOD["timing"], "iperf3": 1}}),
        "timing.iperf3",
    ),
}


def _named_text(template: str) -> str:
    document = copy.deepcopy(GOOD)
    if template == "SPAWN":
        document["workloads"][1]["params"]["spawn_rate"] = float("inf")
    elif template == "CORES":
        document["workloads"][2]["params"]["cores"] = [-1]
    elif template.startswith("TARGET"):
        document["workloads"][0]["params"]["target"] = template.removeprefix("TARGET")
        del document["workloads"][0]["server"]
    elif template.startswith("HTTP"):
        document["workloads"][1]["params"]["target"] = template.removeprefix("HTTP")
        del document["workloads"][1]["server"]
    else:
        return template
    return yaml.safe_dump(document, allow_unicode=True)


@pytest.mark.parametrize("case", list(NAMED))
def test_named_malformed_specs_are_refused(case: str) -> None:
    template, expected = NAMED[case]
    error = refused_properly(_named_text(template))
    assert error is not None, f"{case}: accepted"
    assert expected in str(error), str(error)


def test_a_yaml_error_without_a_mark_still_names_line_and_column() -> None:
    error = refused_properly("name: x\nrepetitions: 2\nbad: \x07\n")
    assert error is not None and error.source == "fuzz.yaml:3:6", str(error)


def test_the_good_spec_is_good() -> None:
    assert refused_properly(yaml.safe_dump(GOOD)) is None


@pytest.mark.parametrize("kind", ["fifo", "device", "huge", "directory"])
def test_files_that_are_no_spec_are_refused_at_once(vtax: Vtax, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "spec.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/zero")
    elif kind == "huge":
        path.write_text("name: x\n" + "# padding\n" * 5_500_000)
    else:
        path = tmp_path
    began = time.monotonic()
    done = vtax("validate", str(path), timeout=20)
    assert time.monotonic() - began < 5
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= MAX_LINE + 20 and str(path) in lines[0], lines
