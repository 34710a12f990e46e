"""The live display: what a user watches while a run goes on."""

from __future__ import annotations

import io
import time

from rich.console import Console

from controller.events import Events
from controller.plan import Trial
from controller.report import LiveDisplay


def _shown(display: LiveDisplay) -> str:
    out = Console(file=io.StringIO(), width=160, color_system=None)
    out.print(display._render())
    assert isinstance(out.file, io.StringIO)
    return out.file.getvalue()


def test_each_host_has_its_cpu_and_a_late_sample_of_an_earlier_trial_is_not_shown() -> None:
    events = Events()
    display = LiveDisplay(Console(file=io.StringIO()), events, warmup=1, steady=3)
    first, second = (Trial(index=i, condition="c", repetition=i + 1) for i in range(2))
    events.trial_start.fire(trial=first, total=2, start_at=time.time(), duration=5)
    assert "host CPU –" in _shown(display)
    events.host_sample.fire(trial=first, sample={"host": "esx-b", "values": {"host.cpu_pct": 40.0}})
    events.host_sample.fire(trial=first, sample={"host": "esx-a", "values": {"host.cpu_pct": 12.5}})
    assert "host CPU esx-a 12.5 %  esx-b 40 %" in _shown(display)

    events.trial_start.fire(trial=second, total=2, start_at=time.time(), duration=5)
    events.host_sample.fire(trial=first, sample={"host": "esx-a", "values": {"host.cpu_pct": 99.0}})  # vCenter's, late
    shown = _shown(display)
    assert "trial 2/2" in shown and "host CPU –" in shown
