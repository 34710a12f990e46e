"""The run loop: for every trial, enter the condition, start servers, start all load at one common time,
collect samples and host counters, enforce the deadline, store everything, leave the condition.

It contains trials only. It is the same for both engines (only the engine object differs), and it knows no
wing and no output: host-counter sources, hook-action handlers and the agents' placement are handed to it by
the composition root (the CLI), and outputs listen to its events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import TypedDict

import workloads
from agent import kept, wire
from agent.identity import machine
from agent.urls import redact
from agent.wire import (
    AgentIdentity,
    AgentResult,
    ClientTags,
    HostSample,
    RunWorkloadRequest,
    ServeRequest,
    TrialRecord,
    TrialTags,
)
from controller import clock
from controller.engine import AgentKilled, AgentLost, AgentRefused, Call, Engine
from controller.errors import InfrastructureError, InputError, VtaxError
from controller.events import Events
from controller.facts import trial_facts
from controller.hooks import ActionHandler, HookError, HookRun, run_hooks
from controller.hostsources import HostCounterSource, TrialWindow, WindowEnd, default_sources
from controller.plan import Trial, make_plan, search_plan, soak_plan
from controller.relay import RelayProcess
from controller.search import (
    MAIN,
    RATE,
    Bracket,
    GoalSearch,
    SearchStep,
    Stepper,
    judges,
    per_stream_bitrate,
)
from controller.spec import ConditionSpec, Experiment, Hook, SearchSpec, TilesSpec
from controller.store import RunIdTaken, Store, StoredSample, StoreFailed, TrialFacts
from controller.tiles import TileStep, bounds, judge_tiles, per_tile, tiles_that_fit
from controller.topology import AgentInfo, Flow, expand, tile_flows
from workloads.base import Target

log = logging.getLogger("vtax.runloop")

SERVE_TIMEOUT_S = 15.0
KEPT_TIMEOUT_S = 30.0  # for an agent to hand back what it kept of a run
FORGET_ALL = 2**62  # a trial index after every trial
SOAK_PREPARE_S = 2.0  # a soak's next segment starts its servers this long (and the lead) before its load
KILL_MARGIN_S = 5.0  # after the deadline, the controller gives up on an agent that has not answered
DISPATCH_FACTOR = 2.0  # the lead is at least this × the time sending a trial's tasks is expected to take
DISPATCH_MARGIN_S = 0.2  # plus this: the broker's delivery and the agents' taking it up

# how a trial ends when one of its agents' results is not ok, worst first
_TRIAL_STATUS = {
    "refused": "refused",
    "lost": "incomplete",
    "killed": "killed",
    "deadline_exceeded": "killed",
    "cancelled": "interrupted",
    "error": "error",
}

FlowKey = tuple[str, str, str | None, int | None]


class Placement(TypedDict):
    """Where a wing found the agents: zones it learnt (None: none) and notes to keep with the run."""

    zones: dict[str, str | None]
    notes: dict[str, object]


# given what each agent registered of itself, where the agents are
Placer = Callable[[Callable[[str], AgentIdentity | None]], Placement]


@dataclasses.dataclass(frozen=True)
class TrialOutcome:
    """A trial as it ended: its record, its KPIs and each flow's result (in flow order)."""

    record: TrialRecord
    kpis: dict[str, float]
    results: list[AgentResult]


class _ServersFailed(Exception):
    """The server side of a trial did not start."""


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


@dataclasses.dataclass
class SegmentRun:
    """How a soak runs one segment: its start (None: as soon as it is ready), whether its condition's turn
    begins or ends with it (its hooks), the timed hooks a resumed soak runs again after the setup (`replay`),
    and where it tells the start it took."""

    start_at: float | None
    setup: bool
    teardown: bool
    replay: list[Hook] = dataclasses.field(default_factory=list)
    started: Future[float] = dataclasses.field(default_factory=Future)


class RunLoop:
    """Executes one experiment through an engine and stores everything it measures."""

    def __init__(
        self,
        experiment: Experiment,
        *,
        store: Store,
        engine: Engine,
        spec_path: str | None,
        events: Events | None = None,
        host_sources: list[HostCounterSource] | None = None,
        actions: Mapping[str, ActionHandler] | None = None,
        place: Placer | None = None,
        command: list[str] | None = None,
        resume: str | None = None,
    ) -> None:
        """`host_sources` give each trial's host counters (default: the experiment's hypervisor agents, or
        where it has none, the controller's own machine); `actions` carry out hook actions by kind; `place`
        tells where the agents are (zones, notes); `command` is the command line that started the run (kept
        with its passwords redacted, for the report's provenance); `resume` is the id of a stopped soak to
        take up at the segment after the last one stored."""
        self.experiment = experiment
        self.store = store
        self.engine = engine
        self.spec_path = spec_path
        self.events = events or Events()
        self.run_id = resume or new_run_id()
        self.resume = resume
        self.agents: dict[str, AgentInfo] = {}
        self.host_sources = host_sources or default_sources(experiment=experiment, engine=engine)
        self.actions = actions or {}
        self.place = place
        self.command = [redact(part) for part in command or []]
        self._offsets: dict[str, float] = {}  # each agent's clock offset, as the engine uses it
        self._rejoins: list[dict[str, object]] = []
        self._open_host: dict[int, list[HostSample]] = {}  # trials whose host record is still being gathered
        self._unstored: set[int] = set()  # trials under way: what agents keep of them (agent.kept) must stay
        self._host_lock = threading.Lock()
        self._flows: list[Flow] = []
        self._next_index = 0  # a search's next trial index, over both searches
        self._repetitions: dict[str, int] = {}  # a search's steps so far per condition, over both searches
        self._late_lead = 0.0  # after a trial whose start some agent received late: the lead at least
        self._takeup_s: float | None = None  # the last trial's: from its dispatch until its last task was taken up
        engine.on_progress = self._progress

    def execute(self) -> str:
        """Run every trial; returns the run id. Hook failures and refusals abort the run."""
        experiment = self.experiment
        plan = (
            soak_plan(experiment)
            if experiment.soak is not None
            else search_plan(experiment)
            if experiment.searches
            else make_plan(experiment)
        )
        if self.resume is not None:
            plan = self._reopen(plan)
        else:
            self._create_run()
        status, reason = "completed", ""
        try:
            self._check_store()
            with self.engine:
                self.agents = self._agent_table()
                self.store.put_note(self.run_id, "environment", self._environment())
                if self.place is not None:
                    self._apply(self.place(self.engine.identity))
                self._flows = expand(experiment, self.agents)
                tiled = {entry.label for entry in experiment.tile_workloads()}
                flows = [flow for flow in self._flows if flow.workload.label not in tiled]
                self._check_task_limits(flows * 2 if experiment.soak is not None else flows)  # segments overlap
                self._measure_clocks(list(self.agents))
                if self.resume is not None:
                    plan = self._recover(plan, flows)
                self.events.run_start.fire(run_id=self.run_id, trials=plan)
                if experiment.soak is not None:
                    self._soak(plan, flows)
                elif not experiment.searches:
                    for trial in plan:
                        self._rejoin()
                        self._trial(trial, len(plan), flows)
                        self._check_store()
                if experiment.search is not None:
                    self._search(experiment.search, len(plan), flows)
                if experiment.tiles is not None:
                    self._tiles(experiment.tiles, len(plan), [f for f in self._flows if f.workload.label in tiled])
                self._forget_kept(self._flows, FORGET_ALL)  # every trial is stored
        except KeyboardInterrupt:
            status, reason = "interrupted", "stopped by the user"
            raise
        except VtaxError as exc:  # a hook, a refusal, the broker: stopped on purpose, with a reason
            status, reason = "aborted", str(exc)
            raise
        except Exception as exc:  # bad input found at run start, or a bug: keep what was measured
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            for source in self.host_sources:  # vCenter's last counters arrive after the last trial
                source.finish(abandon=status == "interrupted")
            self.store.finish_run(self.run_id, status, reason)
            self.events.run_end.fire(run_id=self.run_id, status=status)
        return self.run_id

    def _soak(self, plan: list[Trial], flows: list[Flow]) -> None:
        """A soak: each segment starts as the last ends, its servers and tasks sent while the last still runs, so
        the load runs on across segments. Hooks run only where a condition's turn begins and ends; the load
        pauses between turns for them."""
        length = self.experiment.timing.duration
        soak = self.experiment.soak
        assert soak is not None
        timers: list[threading.Timer] = []
        in_flight: list[Future[TrialOutcome]] = []
        start_at: float | None = None
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="segment") as pool:
            try:
                for k, trial in enumerate(plan):
                    setup = k == 0 or plan[k - 1].condition != trial.condition
                    teardown = k == len(plan) - 1 or plan[k + 1].condition != trial.condition
                    while in_flight and (setup or len(in_flight) > 1):  # a new turn waits for the last to end
                        in_flight.pop(0).result()
                    if setup:
                        start_at = None
                    self._rejoin()
                    if start_at is not None:
                        time.sleep(max(0.0, start_at - self._lead(flows) - SOAK_PREPARE_S - time.time()))
                    segment = SegmentRun(
                        start_at=start_at,
                        setup=setup,
                        teardown=teardown,
                        replay=self._replayed(trial) if k == 0 else [],
                    )
                    in_flight.append(pool.submit(self._trial, trial, len(plan), flows, segment=segment))
                    wait([segment.started, in_flight[-1]], return_when=FIRST_COMPLETED)
                    started = segment.started.result() if segment.started.done() else None  # None: it failed
                    start_at = started + length if started is not None else None
                    timed = [
                        hook for event in soak.at if event.segment == (trial.segment or 0) + 1 for hook in event.run
                    ]
                    if timed and started is not None:
                        timer = threading.Timer(started - time.time(), self._soak_event, (trial, timed))
                        timer.start()
                        timers.append(timer)
                    self._check_store()
                for outcome in in_flight:
                    outcome.result()
            except KeyboardInterrupt:
                self.engine.cancel(self.run_id)  # the segments in flight stop their load and end at once
                for timer in timers:
                    timer.cancel()
                raise
            finally:
                for timer in timers:
                    timer.join()

    def _replayed(self, trial: Trial) -> list[Hook]:
        """A resumed soak's timed hooks of the segments before `trial`, its first: run again after its setup,
        so what they changed (a shaper stepped down) holds again as it did before the controller went."""
        if self.resume is None or self.experiment.soak is None:
            return []
        return [
            hook for event in self.experiment.soak.at if event.segment <= (trial.segment or 0) for hook in event.run
        ]

    def _hooks(self, trial: Trial, hooks: list[Hook], stage: str) -> None:
        """Run hooks for a trial with the run's VTAX_* variables; each run is stored and shown."""

        def ran(hook: HookRun) -> None:
            self.store.add_hook_run(self.run_id, trial.index, hook)
            self.events.hook_ran.fire(trial=trial, hook=hook)

        run_hooks(
            hooks,
            stage=stage,
            condition=trial.condition,
            env={
                "VTAX_RUN_ID": self.run_id,
                "VTAX_TRIAL": str(trial.index),
                "VTAX_CONDITION": trial.condition,
                "VTAX_REPETITION": str(trial.repetition),
            },
            timeout=self.experiment.hook_timeout,
            actions=self.actions,
            on_run=ran,
            passed=self.experiment.hook_env,
        )

    def _soak_event(self, trial: Trial, hooks: list[Hook]) -> None:
        """A soak's timed hooks, run as their segment starts (in a timer thread): a failure is flagged on that
        segment, and the soak goes on."""
        try:
            self._hooks(trial, hooks, "soak")
        except HookError as exc:
            self.store.add_flag(self.run_id, trial.index, kind="soak_event_failed", severity="error", message=str(exc))

    def _search(self, spec: SearchSpec, expected: int, flows: list[Flow]) -> None:
        """A capacity search: each trial offers the searched workload the next load of its condition's current
        goal, and is judged by every goal's criteria as it ends."""
        searches = {c.name: GoalSearch.of(spec) for c in self._baseline_first()}
        judged = judges(spec, spec.sender(self.experiment))
        unit = RATE[judged[MAIN].sender][1]
        steps: dict[str, SearchStep] = {}
        for name, load, final in self._rounds(searches):
            goal = searches[name].current
            trial = self._search_trial(name, final, searches[name].brackets[goal], load=load, unit=unit, goal=goal)
            outcome = self._trial(trial, max(expected, trial.index + 1), flows)
            steps[str(trial.index)] = {"condition": name, "load": load, "final": final, "goal": goal}
            self.store.put_note(self.run_id, "search", steps)
            verdicts = {g: judge(outcome.record["status"], outcome.kpis, load) for g, judge in judged.items()}
            searches[name].record(load, final, verdicts)

    def _tiles(self, spec: TilesSpec, expected: int, base: list[Flow]) -> None:
        """A tiles search: each trial runs its bracket's next number of copies of the tile workloads, and every
        tile must keep the criteria."""
        hypervisors = [a.name for a in self.experiment.agents if a.hypervisor]
        fit = tiles_that_fit(spec, base, self.engine.task_limit, hypervisors)
        if fit == 0:
            raise InputError("tiles: no agent can host a single tile (its load task slots or tiles.per_agent)")
        brackets = {c.name: Bracket(bounds(spec, fit)) for c in self._baseline_first()}
        steps: dict[str, TileStep] = {}
        for name, count, final in self._rounds(brackets):
            trial = self._search_trial(name, final, brackets[name], tiles=int(count))
            flows = tile_flows(base, int(count))
            outcome = self._trial(trial, max(expected, trial.index + 1), flows)
            start_at = outcome.record["start_at"]
            values = per_tile(self.experiment, spec.criteria, start_at, flows, outcome.results) if start_at else {}
            steps[str(trial.index)] = {
                "condition": name,
                "tiles": int(count),
                "final": final,
                "fit": fit,
                "per_tile": values,
            }
            self.store.put_note(self.run_id, "tiles", steps)
            passed, _ = judge_tiles(spec.criteria, outcome.record["status"], outcome.kpis, values)
            brackets[name].record(count, final, passed, None)

    def _baseline_first(self) -> list[ConditionSpec]:
        """A search's conditions, the baseline's trial first in every round: its first trial, at the upper
        bound, shows what the generator sends before any device is judged."""
        return sorted(self.experiment.conditions, key=lambda c: not c.baseline)

    def _rounds(self, brackets: Mapping[str, Stepper]) -> Iterator[tuple[str, float, bool]]:
        """A search's steps, round after round: the next (condition, value, final) of each condition whose
        search goes on, interleaved so drift reaches every condition alike."""
        while True:
            steps = [(name, bracket.next_step()) for name, bracket in brackets.items()]
            todo = [(name, *step) for name, step in steps if step is not None]
            if not todo:
                return
            for name, value, final in todo:
                self._rejoin()
                yield name, value, final
                self._check_store()

    def _search_trial(
        self,
        condition: str,
        final: bool,
        bracket: Bracket,
        *,
        load: float | None = None,
        unit: str = "",
        goal: str = MAIN,
        tiles: int | None = None,
    ) -> Trial:
        """A search's next trial: numbered on over both searches, its repetition the condition's step."""
        self._repetitions[condition] = self._repetitions.get(condition, 0) + 1
        trial = Trial(
            index=self._next_index,
            condition=condition,
            repetition=self._repetitions[condition],
            load=load,
            final=final,
            tiles=tiles,
            unit=unit,
            goal="" if goal == MAIN else goal,
            bracket=(bracket.passed, bracket.failed),
        )
        self._next_index += 1
        return trial

    def _reopen(self, plan: list[Trial]) -> list[Trial]:
        """A stopped soak taken up again: its segments after the last one stored (the one cut off runs again),
        the resume noted; the time away shows as a gap between the segments either side."""
        stored = [t["idx"] for t in self.store.trials(self.run_id)]
        left = [trial for trial in plan if trial.index > max(stored, default=-1)]
        if not left:
            raise InputError(f"run {self.run_id} has every segment stored: there is nothing to resume")
        self.store.reopen_run(self.run_id)
        resumes = self.store.notes(self.run_id).get("resumes") or []
        self.store.put_note(self.run_id, "resumes", [*resumes, {"at": time.time(), "segment": left[0].index}])
        return left

    def _recover(self, plan: list[Trial], flows: list[Flow]) -> list[Trial]:
        """A resumed soak's segments that were under way when its controller went: what their agents kept of
        them (`agent.kept`) is stored as those segments, one cut off as cut_short with its samples up to then
        (one whose load had not begun runs again). Returns the segments still to run (none: the soak ended
        while its controller was gone)."""
        collected = self._forget_kept(flows, plan[0].index)
        by_trial: dict[int, list[wire.KeptResult]] = {}
        for found in collected:
            by_trial.setdefault(found["trial"], []).append(found)
        planned = {trial.index: trial for trial in plan}
        recovered = set()
        for idx, found in sorted(by_trial.items()):
            trial = planned.get(idx)
            results = [k["result"] for k in found]
            if trial is None or not any(r["samples"] for r in results):  # its load had not begun: it runs again
                continue
            start_at = found[0]["start_at"]
            self._store_results(idx, start_at, results, [])
            status, reason = _recovered_status(results, len(flows))
            self.store.add_trial(self.run_id, {
                "idx": idx, "condition": trial.condition, "repetition": trial.repetition, "status": status,
                "reason": reason, "start_at": start_at, "deadline": found[0]["deadline"],
                "ended": max((r.get("ended_at") or start_at) for r in results),
            })  # fmt: skip
            samples = sum(len(r["samples"]) for r in results)
            self.events.segment_recovered.fire(trial=trial, status=status, samples=samples)
            recovered.add(idx)
        return [trial for trial in plan if trial.index not in recovered]

    def _forget_kept(self, flows: list[Flow], before: int) -> list[wire.KeptResult]:
        """Ask every client agent to forget what it kept of this run's trials before `before`, and hand back the
        rest; an agent that cannot answer (gone, or a vtax that keeps nothing) is logged and skipped."""
        calls = {
            agent: self.engine.call(agent, wire.KEPT, {"run": self.run_id, "forget_before": before})
            for agent in sorted({flow.client for flow in flows})
        }
        handed: list[wire.KeptResult] = []
        for agent, call in calls.items():
            try:
                handed += call.result(timeout=KEPT_TIMEOUT_S)["results"]
            except Exception as exc:  # the soak goes on without what that agent kept
                log.warning("agent %s: what it kept of run %s is not collected: %s", agent, self.run_id, exc)
        return handed

    def _create_run(self) -> None:
        """The run's row, under a fresh id should two runs started in the same second draw the same one."""
        for _attempt in range(8):
            try:
                self.store.create_run(
                    run_id=self.run_id,
                    name=self.experiment.name,
                    engine=self.engine.kind,
                    spec_path=self.spec_path,
                    spec=self.experiment.model_dump(mode="json"),
                )
                return
            except RunIdTaken:
                self.run_id = new_run_id()
        raise InfrastructureError(f"{self.store.path}: no free run id after 8 tries")

    def _check_store(self) -> None:
        """Stop, between trials, once the store takes no more writes: what was measured is in its side file."""
        if self.store.failure is not None:
            raise StoreFailed(f"{self.store.failure}; {self.store.kept_note()}")

    def _check_task_limits(self, flows: list[Flow]) -> None:
        """Refuse, before any load, a trial that asks an agent process for more load tasks at once than it runs
        (each holds a thread for the trial): they would start seconds late, with nothing but skew to show it."""
        holding: dict[str, list[str]] = {}
        limits: dict[str, int] = {}
        tasks = [flow.client for flow in flows] + [a.name for a in self.experiment.agents if a.hypervisor]
        for agent in tasks:
            limit = self.engine.task_limit(agent)
            if limit is not None:
                holding.setdefault(limit[0], []).append(agent)
                limits[limit[0]] = limit[1]
        for process, agents in holding.items():
            if len(agents) > limits[process]:
                names = ", ".join(sorted(set(agents)))
                raise InputError(
                    f"each trial asks {len(agents)} load tasks at once of agent(s) {names}, more than the "
                    f"{limits[process]} their process runs at once (vtax agent --concurrency)"
                )

    def _measure_clocks(self, agents: list[str]) -> None:
        """Measure these agents' clock offsets (again, for an agent that came back) and use them from now on."""
        # ±1 ms, or a quarter of a tighter start-skew limit: an offset's error moves its agent's true start by as
        # much (16 agents known to ±5 ms started up to 5 ms apart)
        good_enough = min(clock.GOOD_ENOUGH_S, self.experiment.timing.max_start_skew_ms / 4 / 1000)
        clocks = clock.measure(self.engine, agents, good_enough=good_enough)
        self._offsets |= {agent: reading.offset_s for agent, reading in clocks.items()}
        self.engine.use_clocks(self._offsets)
        self.store.add_clocks(self.run_id, {a: vars(c) for a, c in clocks.items()})

    def _rejoin(self) -> None:
        """Before a trial: wait a bounded time for lost agents to come back, so that one agent's restart costs
        the trials it really missed, not the rest of the run."""
        lost = self.engine.lost_agents()
        if not lost:
            return
        timeout = self.experiment.rejoin_timeout
        self.events.agents_lost.fire(agents=lost, timeout=timeout)
        began = time.monotonic()
        missing = self.engine.rejoin(lost, timeout)
        back = [agent for agent in lost if agent not in missing]
        if back:
            self._measure_clocks(back)
        seconds = time.monotonic() - began
        self._rejoins.append({"at": time.time(), "back": back, "missing": missing, "waited_s": round(seconds, 3)})
        self.store.put_note(self.run_id, "agent_rejoins", self._rejoins)
        self.events.agents_back.fire(agents=back, missing=missing, seconds=seconds)

    def _agent_table(self) -> dict[str, AgentInfo]:
        """Address and zone of every agent: the spec's, else what the agent registered, else loopback."""
        table = {}
        for spec in self.experiment.agents:
            registered = self.engine.identity(spec.name) or {}
            table[spec.name] = AgentInfo(
                name=spec.name,
                address=spec.address or registered.get("address") or "127.0.0.1",
                zone=spec.zone or registered.get("zone"),
                labels=spec.labels,
                hypervisor=spec.hypervisor,
            )
        return table

    def _environment(self) -> dict[str, object]:
        """What ran this: the controller's machine and versions, and what each remote agent registered (an
        embedded agent runs on the controller's machine)."""
        volatile = ("heartbeat", "sink")
        agents = {}
        for name in self.agents:
            registered = self.engine.identity(name)
            if registered is not None:
                agents[name] = {k: v for k, v in registered.items() if k not in volatile}
        return {"controller": machine(), "agents": agents, "command": self.command}

    def _apply(self, placement: Placement) -> None:
        """A placement's zones fill in where the spec names none; its notes are kept with the run."""
        for name, zone in placement["zones"].items():
            if self.experiment.agent(name).zone is None and zone is not None:
                self.agents[name] = dataclasses.replace(self.agents[name], zone=zone)
        for key, note in placement["notes"].items():
            self.store.put_note(self.run_id, key, note)

    def _tags(self, trial: Trial) -> TrialTags:
        return {"run": self.run_id, "trial": trial.index, "condition": trial.condition, "repetition": trial.repetition}

    def _lead(self, flows: list[Flow]) -> float:
        """Seconds from dispatch to a trial's common start: the spec's (and its tools') lead, or longer where
        getting the tasks to every agent is expected to take longer: DISPATCH_FACTOR × how long the last trial's
        took, from its dispatch until the last agent took its task up; before the first trial, × what the engine
        expects sending them to take. After a trial whose start some agent received too late, at least twice its
        lead."""
        expected = (
            self._takeup_s if self._takeup_s is not None else self.engine.send_estimate(wire.RUN_WORKLOAD, len(flows))
        )
        return max(self.experiment.lead, DISPATCH_FACTOR * expected + DISPATCH_MARGIN_S, self._late_lead)

    def _note_receipt(self, trial: Trial, dispatched: float, start_at: float, results: list[AgentResult]) -> None:
        """When the agents took up a trial's tasks: the take-up time the next lead follows, and a flag on a trial
        whose start some agent received only after it. Its load did not start together, so it is left out of the
        statistics, and the following trials' lead is doubled at least. (One that took it up in time but too late
        for its tool to be ready starts late: the start_skew warning tells that.)"""
        received = [r["received_at"] for r in results if "received_at" in r]
        if received:
            self._takeup_s = max(received) - dispatched
        late = sorted((r["received_at"] - start_at, r["agent"]) for r in results if r.get("received_at", 0) > start_at)
        if not late:
            return
        lead = start_at - dispatched
        self._late_lead = max(self._late_lead, 2 * lead)
        names = ", ".join(agent for _, agent in late[:5]) + (f" and {len(late) - 5} more" if len(late) > 5 else "")
        self.store.add_flag(
            self.run_id,
            trial.index,
            kind="start_received_late",
            severity="error",
            message=f"{len(late)} agent(s) received the start time too late to start together ({names}; the latest "
            f"{late[-1][0]:+.3f} s after the start, with a lead of {lead:.2f} s); the next trials' lead is "
            f"{self._late_lead:.2f} s at least",
        )

    def _progress(self, agent: str, workload: str, values: dict[str, float]) -> None:
        self.events.agent_progress.fire(agent=agent, workload=workload, values=values)

    def _condition(self, name: str) -> ConditionSpec:
        return next(c for c in self.experiment.conditions if c.name == name)

    def _trial(
        self,
        trial: Trial,
        total: int,
        flows: list[Flow],
        *,
        segment: SegmentRun | None = None,
    ) -> TrialOutcome:
        """One trial: its condition's setup hooks, servers, load, host counters, record, and teardown hooks. A
        soak's segment may have its start given (as the last segment ends) and runs the hooks only where its
        condition's turn begins or ends."""
        condition = self._condition(trial.condition)
        timing = self.experiment.timing
        record: TrialRecord = {
            "idx": trial.index,
            "condition": trial.condition,
            "repetition": trial.repetition,
            "status": "aborted",
            "reason": "",
            "start_at": None,
            "deadline": None,
            "ended": None,
        }
        kpis: dict[str, float] = {}
        results: list[AgentResult] = []
        self._unstored.add(trial.index)

        def hooks(stage: str) -> None:
            self._hooks(trial, getattr(condition, stage), stage)

        try:
            if segment is None or segment.setup:
                hooks("setup")
            if segment is not None and segment.replay:
                self._hooks(trial, segment.replay, "soak")
            with self._serving(condition, flows) as targets:
                start_at = (segment.start_at if segment is not None else None) or time.time() + self._lead(flows)
                if segment is not None:
                    segment.started.set_result(start_at)
                deadline = start_at + timing.duration + timing.grace
                record["start_at"], record["deadline"] = start_at, deadline
                record["status"], record["reason"], kpis, results = self._measure(
                    trial, total, flows, targets, start_at, deadline
                )
        except _ServersFailed as exc:
            record["status"], record["reason"] = "error", f"server side did not start: {exc}"
        except HookError as exc:
            record["reason"] = str(exc)
            raise
        except KeyboardInterrupt:
            self.engine.cancel(self.run_id)  # every agent stops its load before the teardown hooks run
            record["status"], record["reason"] = "interrupted", "stopped by the user"
            raise
        finally:
            record["ended"] = time.time()
            self.store.add_trial(self.run_id, record)  # never raises: a failing store keeps it in its side file
            self._unstored.discard(trial.index)
            with self._host_lock:
                self._open_host.pop(trial.index, None)
            try:
                if segment is None or segment.teardown:
                    hooks("teardown")
            finally:
                self.events.trial_end.fire(trial=trial, total=total, record=record, kpis=kpis)
        if record["status"] == "refused":
            raise AgentRefused(record["reason"])
        if record["status"] == "incomplete" and self.experiment.on_agent_loss == "abort":
            raise InfrastructureError(f"trial {trial.index} incomplete and on_agent_loss is abort: {record['reason']}")
        return TrialOutcome(record, kpis, results)

    @contextlib.contextmanager
    def _serving(self, condition: ConditionSpec, flows: list[Flow]) -> Iterator[dict[FlowKey, Target]]:
        """The trial's servers, and the built-in relay in front of them when the condition asks for it."""
        timing = self.experiment.timing
        serve_deadline = time.time() + SERVE_TIMEOUT_S + self.experiment.lead + timing.duration + timing.grace
        try:
            targets = self._start_servers(flows, serve_deadline)
        except InfrastructureError as exc:
            raise _ServersFailed(str(exc)) from None
        relays: list[RelayProcess] = []
        try:
            if condition.appliance == "relay":
                for key, target in targets.items():
                    relay = RelayProcess(upstream_host=target["host"], upstream_port=target["port"])
                    relays.append(relay)
                    targets[key] = Target(host=relay.host, port=relay.port)
            yield targets
        finally:
            for relay in relays:
                relay.stop()

    def _measure(
        self,
        trial: Trial,
        total: int,
        flows: list[Flow],
        targets: dict[FlowKey, Target],
        start_at: float,
        deadline: float,
    ) -> tuple[str, str, dict[str, float], list[AgentResult]]:
        """Load and host counters for one trial window: its status, reason, KPIs and the flows' results (in
        flow order)."""
        timing = self.experiment.timing
        window = TrialWindow(tags=self._tags(trial), start_at=start_at, seconds=timing.duration)
        self.events.trial_start.fire(trial=trial, total=total, start_at=start_at, duration=timing.duration)
        with self._host_lock:
            self._open_host[trial.index] = []

        def on_sample(sample: HostSample) -> None:
            self.events.host_sample.fire(trial=trial, sample=sample)

        def on_record(samples: list[HostSample]) -> None:
            self._record_host(trial, start_at, samples)

        ends: list[WindowEnd] = []
        try:
            for source in self.host_sources:
                ends.append(source.begin(window, on_sample=on_sample, on_record=on_record))
            dispatched = time.time()
            calls = self._dispatch(trial, flows, targets, start_at, deadline)
            results = self._collect(calls, start_at, deadline)
            self._note_receipt(trial, dispatched, start_at, results)
        except KeyboardInterrupt:
            for source in self.host_sources:  # stopped: no window end waits out the trial's planned end
                source.finish(abandon=True)
            raise
        finally:
            for end in ends:
                end()
        with self._host_lock:
            host = self._open_host.pop(trial.index, [])
        kpis = self._store_results(trial.index, start_at, results, host)["kpis"]
        status, reason = _status_of(results)
        return status, reason, kpis, results

    def _store_results(
        self, idx: int, start_at: float, results: list[AgentResult], host: list[HostSample]
    ) -> TrialFacts:
        """A trial's agent results stored, and its facts computed from them and its host counters, and stored."""
        self.store.add_agent_results(self.run_id, idx, results)
        samples: list[StoredSample] = [
            {**s, "trial_idx": idx, "agent": r["agent"], "workload": r["workload"]}
            for r in results
            for s in r["samples"]
        ]
        facts = trial_facts(self.experiment, start_at, samples, host)
        self.store.put_facts(self.run_id, idx, facts)
        return facts

    def _record_host(self, trial: Trial, start_at: float, samples: list[HostSample]) -> None:
        """A source's record of a trial's host counters: stored, and in the trial's KPIs. Counters that arrive
        once the trial is over (vCenter's) make its KPIs be computed again and announced."""
        self.store.add_host_samples(self.run_id, trial.index, samples)
        with self._host_lock:
            gathering = self._open_host.get(trial.index)
            if gathering is not None:
                gathering += samples
                return
        if samples:
            facts = trial_facts(
                self.experiment,
                start_at,
                self.store.samples(self.run_id, trial.index),
                self.store.host_samples(self.run_id, trial.index),
            )
            self.store.put_facts(self.run_id, trial.index, facts)
            self.events.trial_kpis.fire(trial=trial, kpis=facts["kpis"])

    def _start_servers(self, flows: list[Flow], deadline: float) -> dict[FlowKey, Target]:
        """One server per flow (iperf3 serves one test at a time); all started before any client."""
        served: list[Flow] = []
        targets: dict[FlowKey, Target] = {}
        for flow in flows:
            if flow.server is not None:
                served.append(flow)
                continue
            external = workloads.get(flow.workload.kind).external_target(flow.workload.params)
            if external is not None:
                targets[flow.key] = external
        sent = self.engine.call_all(
            [Call(flow.server, wire.SERVE, self._serve_request(flow, deadline)) for flow in served if flow.server]
        )
        calls: dict[FlowKey, Future[Target]] = {flow.key: each.future for flow, each in zip(served, sent, strict=True)}
        for key, future in calls.items():
            try:
                targets[key] = future.result(timeout=SERVE_TIMEOUT_S)
            except TimeoutError:
                raise InfrastructureError(
                    f"no answer from server agent {key[2]!r} within {SERVE_TIMEOUT_S:g} s"
                ) from None
        return targets

    def _serve_request(self, flow: Flow, deadline: float) -> ServeRequest:
        assert flow.server is not None
        return {
            "kind": flow.workload.kind,
            "params": flow.workload.params.model_dump(mode="json"),
            "bind": self.agents[flow.server].address,
            "deadline": deadline,
        }

    def _client_request(
        self, trial: Trial, flow: Flow, target: Target | None, start_at: float, deadline: float
    ) -> RunWorkloadRequest:
        timing = self.experiment.timing
        tags: ClientTags = {
            **self._tags(trial),
            "zone": self.agents[flow.client].zone,
            "workload": flow.workload.label,
            "kind": flow.workload.kind,
            "role": "client",
        }
        params = flow.workload.params.model_dump(mode="json")
        search = self.experiment.search
        if trial.load is not None and search is not None and flow.workload.label == search.workload:
            flows = sum(1 for f in self._flows if f.workload.label == search.workload)
            if flow.workload.kind == "http":
                params["rps"] = trial.load / flows
            else:
                params["bitrate"] = per_stream_bitrate(trial.load, flows, params["streams"] * params["processes"])
        return {
            "agent": flow.client,
            "workload": flow.workload.label,
            "kind": flow.workload.kind,
            "params": params,
            "target": target,
            "start_at": start_at,
            "duration": timing.duration,
            "deadline": deadline,
            "tags": tags,
            "warmup": timing.warmup,
            "steady": timing.steady,
            "acked_before": min(self._unstored, default=trial.index),
        }

    def _dispatch(
        self,
        trial: Trial,
        flows: list[Flow],
        targets: dict[FlowKey, Target],
        start_at: float,
        deadline: float,
    ) -> list[tuple[Flow, Future[AgentResult]]]:
        """Every client at once."""
        sent = self.engine.call_all(
            [
                Call(
                    flow.client,
                    wire.RUN_WORKLOAD,
                    self._client_request(trial, flow, targets.get(flow.key), start_at, deadline),
                )
                for flow in flows
            ]
        )
        return [(flow, each.future) for flow, each in zip(flows, sent, strict=True)]

    def _collect(
        self, calls: list[tuple[Flow, Future[AgentResult]]], start_at: float, deadline: float
    ) -> list[AgentResult]:
        """Wait for every agent until the deadline plus a margin; give up on the ones that do not answer."""
        wait([f for _, f in calls], timeout=max(0.0, deadline + KILL_MARGIN_S - time.time()))
        results = []
        for flow, future in calls:
            if not future.done():
                self.engine.kill(flow.client, "no result by the trial deadline")
            try:
                result = future.result(timeout=0)
            except AgentRefused as exc:
                result = _failure(flow, "refused", str(exc))
            except AgentKilled as exc:
                result = _failure(flow, "killed", str(exc))
            except AgentLost as exc:
                result = _failure(flow, "lost", str(exc))
            except Exception as exc:
                result = _failure(flow, "error", str(exc))
            if "started_at" in result:
                result = {**result, "start_skew_s": result["started_at"] - start_at}
            results.append(result)
        return results


def _failure(flow: Flow, status: wire.WorkloadStatus, reason: str) -> AgentResult:
    return {
        "agent": flow.client,
        "workload": flow.workload.label,
        "status": status,
        "reason": reason,
        "samples": [],
        "summary": {},
    }


def _recovered_status(results: list[AgentResult], flows: int) -> tuple[str, str]:
    """A recovered segment's status: ok when every load task ran to its end; cut_short (a warning, the segment
    left out of the statistics, its samples stored) when the controller's going stopped some of them; else as a
    segment's failure would be."""
    if any(r["status"] == "lost" and r["reason"] == kept.STOPPED for r in results):
        return "cut_short", f"its controller was gone before it ended: {kept.STOPPED}"
    status, reason = _status_of(results)
    if status == "ok" and len(results) < flows:
        return "incomplete", f"{flows - len(results)} of {flows} load tasks were not kept by their agents"
    return status, reason


def _status_of(results: list[AgentResult]) -> tuple[str, str]:
    """A trial's status and reason from its agents' results: the worst status any of them had, ok if none
    failed."""
    failed = sorted((r for r in results if r["status"] != "ok"), key=lambda r: list(_TRIAL_STATUS).index(r["status"]))
    if not failed:
        return "ok", ""
    worst = failed[0]
    return _TRIAL_STATUS[worst["status"]], f"{worst['workload']} on {worst['agent']}: {worst['reason']}"
