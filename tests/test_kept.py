"""What an agent keeps of its load tasks on disk until the controller has stored them (agent.kept): a task that
ended comes back whole, one cut off by a kill as `lost` with the samples it wrote, what the controller has
stored is forgotten, and through the agent's edge all of it is in the controller's clock.

The whole path (a controller SIGKILLed mid-segment, resumed, the segment collected) is in tests/test_soak.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agent import wire
from agent.edge import AgentHost, execute
from agent.kept import KEEP_S, STOPPED, Kept
from agent.wire import AgentResult


def _result(status: str = "ok") -> AgentResult:
    return {"agent": "a", "workload": "w", "status": status, "reason": "", "samples": [], "summary": {}}  # type: ignore[typeddict-item]


def test_a_finished_task_comes_back_whole_and_a_cut_one_with_what_it_wrote(tmp_path: Path) -> None:
    kept = Kept(tmp_path)
    done = kept.begin(run="r1", trial=0, agent="a", workload="w", start_at=100.0, deadline=120.0)
    for t in (100.0, 101.0, 102.0):
        done.sample({"t": t, "dt": 1.0, "values": {"x": t}})
    done.done({**_result(), "samples": [{"t": 0.0, "dt": 1.0, "values": {}}]})  # its samples are the file's
    cut = kept.begin(run="r1", trial=1, agent="a", workload="w", start_at=110.0, deadline=130.0)
    cut.sample({"t": 110.0, "dt": 1.0, "values": {"x": 1.0}})
    cut.sample({"t": 111.0, "dt": 1.0, "values": {"x": 2.0}})
    path = next((tmp_path / "r1").glob("0000001-*"))
    path.write_text(path.read_text()[:-9])  # the kill came while the last line was being written

    finished, cut_off = kept.collect("r1")
    assert finished["trial"] == 0 and finished["result"]["status"] == "ok"
    assert [s["t"] for s in finished["result"]["samples"]] == [100.0, 101.0, 102.0]
    assert cut_off["trial"] == 1 and (cut_off["start_at"], cut_off["deadline"]) == (110.0, 130.0)
    assert cut_off["result"]["status"] == "lost" and cut_off["result"]["reason"] == STOPPED
    assert [s["t"] for s in cut_off["result"]["samples"]] == [110.0]  # the half-written line is left out
    assert cut_off["result"]["ended_at"] == 111.0

    kept.forget("r1", 1)
    assert [k["trial"] for k in kept.collect("r1")] == [1]
    kept.forget("r1", 2)
    assert kept.collect("r1") == [] and not (tmp_path / "r1").exists()


def test_a_run_untouched_for_longer_than_any_soak_is_let_go(tmp_path: Path) -> None:
    kept = Kept(tmp_path)
    for run in ("old", "new"):
        kept.begin(run=run, trial=0, agent="a", workload="w", start_at=1.0, deadline=2.0).done(_result())
    old = time.time() - KEEP_S - 60
    for path in (tmp_path / "old").glob("*"):
        os.utime(path, (old, old))
    Kept(tmp_path)  # an agent starting
    assert not (tmp_path / "old").exists() and len(Kept(tmp_path).collect("new")) == 1


def test_the_edge_keeps_a_load_task_in_the_controllers_clock_and_forgets_what_is_stored(tmp_path: Path) -> None:
    """A cpu load task of 2 s on an agent whose clock is 30 s behind; the request says trials before 2 are
    stored, so trial 1's file goes. `vtax.kept` hands back trial 2 as its reply said it, times converted once."""
    offset = -30.0
    host = AgentHost(name="a", kept=Kept(tmp_path))
    assert host.kept is not None
    host.kept.begin(run="r", trial=1, agent="a", workload="load", start_at=1.0, deadline=2.0).done(_result())
    start_at = time.time() - offset + 0.3
    tags: wire.ClientTags = {
        "run": "r", "trial": 2, "condition": "c", "repetition": 1, "zone": None, "workload": "load", "kind": "cpu",
        "role": "client",
    }  # fmt: skip
    request: wire.Request = {
        "id": 1,
        "task": wire.RUN_WORKLOAD,
        "kwargs": {
            "agent": "a",
            "workload": "load",
            "kind": "cpu",
            "params": {"workers": 1, "percent": 20},
            "target": None,
            "start_at": start_at,
            "duration": 2.0,
            "deadline": start_at + 10,
            "tags": tags,
            "warmup": 0.0,
            "steady": 2.0,
            "acked_before": 2,
        },
        "clock_offset": offset,
    }
    replies: list[wire.Message] = []
    execute(request, host, replies.append)
    [reply] = [r for r in replies if "ok" in r]  # besides it, progress
    assert reply["ok"], reply
    answered: AgentResult = reply["result"]  # type: ignore[typeddict-item,assignment]
    assert answered["samples"] and answered["samples"][0]["t"] == pytest.approx(start_at, abs=0.2)

    replies.clear()
    execute(
        {"id": 2, "task": wire.KEPT, "kwargs": {"run": "r", "forget_before": 0}, "clock_offset": offset},
        host,
        replies.append,
    )
    [reply] = replies
    [found] = reply["result"]["results"]  # type: ignore[typeddict-item]
    assert not (tmp_path / "r" / "0000001-a-load.jsonl").exists()  # trial 1 was stored: forgotten
    assert found["trial"] == 2 and found["start_at"] == pytest.approx(start_at)
    assert found["result"]["samples"] == answered["samples"]
    assert {k: v for k, v in found["result"].items() if k != "samples"} == {
        k: v for k, v in answered.items() if k != "samples"
    }
