"""The run loop: for every trial, enter the condition, start servers, start all load at one common
time, collect samples and host counters, enforce the deadline, store everything, leave the condition.

The loop is the same for both engines; only the engine object differs.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from datetime import UTC, datetime
from typing import Any

import workloads
from agent.points import host_lines, marker_line, phase_of
from agent.sink import InfluxSink
from controller import clock
from controller.analysis import trial_kpis
from controller.engine import AgentKilled, AgentLost, AgentRefused, Engine
from controller.errors import InfrastructureError, VtaxError
from controller.events import Events
from controller.hooks import HookError, run_hooks
from controller.hostcounters import (
    AgentHostSource,
    HostCounterSource,
    HostSample,
    default_sources,
)
from controller.plan import Trial, make_plan
from controller.relay import RelayProcess
from controller.spec import ConditionSpec, Experiment
from controller.store import Store
from controller.topology import AgentInfo, Flow, expand
from controller.vsphere import Vsphere, VsphereHostSource, guest_agents
from workloads.base import Target

SERVE_TIMEOUT_S = 15.0
KILL_MARGIN_S = 5.0  # after the deadline, the controller gives up on an agent that has not answered

# how a trial ends when one of its agents' results is not ok, worst first
_TRIAL_STATUS = {
    "refused": "refused",
    "lost": "incomplete",
    "killed": "killed",
    "deadline_exceeded": "killed",
    "cancelled": "interrupted",
    "error": "error",
}


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


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
        sink: InfluxSink | None = None,
        host_sources: list[HostCounterSource] | None = None,
        vsphere: Vsphere | None = None,
    ) -> None:
        """`host_sources` give each trial's host counters; by default the experiment's hypervisor agents, or
        where it has none, the controller's own machine."""
        self.experiment = experiment
        self.store = store
        self.engine = engine
        self.spec_path = spec_path
        self.events = events or Events()
        self.run_id = new_run_id()
        self.agents: dict[str, AgentInfo] = {}
        self.clocks: dict[str, clock.ClockReading] = {}
        self.sink = sink
        self.vsphere = vsphere
        if host_sources is None:
            hypervisor = (
                VsphereHostSource(vsphere=vsphere, store=store, cooldown_s=experiment.timing.cooldown)
                if vsphere is not None
                else None
            )
            host_sources = default_sources(
                experiment=experiment, engine=engine, clocks=self.clocks, hypervisor=hypervisor
            )
        self.host_sources = host_sources
        engine.on_progress = self._progress

    def execute(self) -> str:
        """Run every trial; returns the run id. Hook failures and refusals abort the run."""
        plan = make_plan(self.experiment)
        self.store.create_run(
            run_id=self.run_id,
            name=self.experiment.name,
            engine=self.engine.kind,
            spec_path=self.spec_path,
            spec=self.experiment.model_dump(mode="json"),
        )
        status, reason = "completed", ""
        try:
            with self.engine:
                self.agents = self._agent_table()
                if self.vsphere is not None:
                    self._place_in_vsphere(self.vsphere)
                flows = expand(self.experiment, self.agents)
                self.clocks.update(clock.measure(self.engine, list(self.agents)))  # the host sources read them
                self.store.add_clocks(self.run_id, {a: vars(c) for a, c in self.clocks.items()})
                self.events.run_start.fire(run_id=self.run_id, trials=plan)
                for trial in plan:
                    self._trial(trial, len(plan), flows)
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

    def _place_in_vsphere(self, vsphere: Vsphere) -> None:
        """Map every guest agent to its VM, host and zone; vSphere's zone fills in where the spec names none."""
        placed = vsphere.map(guest_agents(self.experiment, self.engine.identity))
        for name, found in placed.items():
            if self.experiment.agent(name).zone is None and found.zone is not None:
                self.agents[name] = dataclasses.replace(self.agents[name], zone=found.zone)
        self.store.put_note(self.run_id, "vsphere", vsphere.describe())

    def _tags(self, trial: Trial) -> dict[str, Any]:
        return {"run": self.run_id, "trial": trial.index, "condition": trial.condition, "repetition": trial.repetition}

    def _progress(self, agent: str, workload: str, values: dict[str, float]) -> None:
        self.events.agent_progress.fire(agent=agent, workload=workload, values=values)

    def _condition(self, name: str) -> ConditionSpec:
        return next(c for c in self.experiment.conditions if c.name == name)

    def _trial(self, trial: Trial, total: int, flows: list[Flow]) -> None:
        condition = self._condition(trial.condition)
        env = {
            "VTAX_RUN_ID": self.run_id,
            "VTAX_TRIAL": str(trial.index),
            "VTAX_CONDITION": trial.condition,
            "VTAX_REPETITION": str(trial.repetition),
        }
        row: dict[str, Any] = {
            "idx": trial.index,
            "condition": trial.condition,
            "repetition": trial.repetition,
            "status": "aborted",
            "reason": "",
            "start_at": None,
            "deadline": None,
            "ended": None,
        }
        hook_args = {
            "condition": condition.name,
            "env": env,
            "timeout": self.experiment.hook_timeout,
            "vsphere": self.vsphere,
        }
        tags = self._tags(trial)
        try:
            run_hooks(condition.setup, stage="setup", **hook_args)
            self._measure(trial, total, condition, flows, row)
        except HookError as exc:
            row["reason"] = str(exc)
            raise
        except KeyboardInterrupt:
            self.engine.cancel(self.run_id)  # every agent stops its load before the teardown hooks run
            row["status"], row["reason"] = "interrupted", "stopped by the user"
            raise
        finally:
            row["ended"] = row["ended"] or time.time()
            self.store.add_trial(self.run_id, row)
            if self.sink is not None:
                self.sink.submit([marker_line(tags, event="end", t=row["ended"], status=row["status"])])
            try:
                run_hooks(condition.teardown, stage="teardown", **hook_args)
            finally:
                self.events.trial_end.fire(
                    trial=trial, total=total, status=row["status"], reason=row["reason"], kpis=row.get("kpis", {})
                )
        if row["status"] == "refused":
            raise AgentRefused(row["reason"])
        if row["status"] == "incomplete" and self.experiment.on_agent_loss == "abort":
            raise InfrastructureError(f"trial {trial.index} incomplete and on_agent_loss is abort: {row['reason']}")

    def _measure(
        self, trial: Trial, total: int, condition: ConditionSpec, flows: list[Flow], row: dict[str, Any]
    ) -> None:
        timing = self.experiment.timing
        serve_deadline = time.time() + SERVE_TIMEOUT_S + timing.lead + timing.duration + timing.grace
        relays: list[RelayProcess] = []
        begun: list[HostCounterSource] = []
        try:
            try:
                targets = self._start_servers(flows, serve_deadline)
            except InfrastructureError as exc:
                row["status"], row["reason"] = "error", f"server side did not start: {exc}"
                return
            if condition.appliance == "relay":
                for key, target in targets.items():
                    relay = RelayProcess(upstream_host=target["host"], upstream_port=target["port"])
                    relays.append(relay)
                    targets[key] = Target(host=relay.host, port=relay.port)
            start_at = time.time() + timing.lead
            deadline = start_at + timing.duration + timing.grace
            row.update(start_at=start_at, deadline=deadline)
            self.events.trial_start.fire(trial=trial, total=total, start_at=start_at, duration=timing.duration)
            tags = self._tags(trial)
            if self.sink is not None:
                self.sink.submit([marker_line(tags, event="start", t=start_at, status="running")])

            for source in self.host_sources:
                # an agent source's agents write to InfluxDB themselves
                write = not isinstance(source, AgentHostSource)
                on_sample = self._host_sample_handler(trial, tags, start_at, write=write)
                source.begin(trial=trial, tags=tags, start_at=start_at, seconds=timing.duration, on_sample=on_sample)
                begun.append(source)
            calls = self._dispatch(trial, flows, targets, start_at, deadline)
            results = self._collect(calls, start_at, deadline)
        finally:
            host_samples = [sample for source in begun for sample in source.end()]
            for relay in relays:
                relay.stop()
        self.store.add_host_samples(self.run_id, trial.index, host_samples)
        for result in results:
            self.store.add_agent_result(self.run_id, trial.index, result)
        samples = [{**s, "agent": r["agent"], "workload": r["workload"]} for r in results for s in r["samples"]]
        row["kpis"] = trial_kpis(self.experiment, row, samples, host_samples)
        failed = sorted(
            (r for r in results if r["status"] != "ok"), key=lambda r: list(_TRIAL_STATUS).index(r["status"])
        )
        if failed:
            row["status"] = _TRIAL_STATUS[failed[0]["status"]]
            row["reason"] = f"{failed[0]['workload']} on {failed[0]['agent']}: {failed[0]['reason']}"
        else:
            row["status"] = "ok"

    def _host_sample_handler(
        self, trial: Trial, tags: dict[str, Any], start_at: float, *, write: bool
    ) -> Callable[[HostSample], None]:
        """Each second of host counters to the live display and, with `write`, to the controller's sink."""
        timing = self.experiment.timing

        def handle(sample: HostSample) -> None:
            self.events.host_sample.fire(trial=trial, sample=sample)
            if write and self.sink is not None:
                phase = phase_of(
                    sample["t"], sample["dt"], start_at=start_at, warmup=timing.warmup, steady=timing.steady
                )
                self.sink.submit(host_lines(sample, {**tags, "host": sample["host"]}, phase))

        return handle

    def _start_servers(self, flows: list[Flow], deadline: float) -> dict[tuple[str, str, str | None], Target]:
        """One server per flow (iperf3 serves one test at a time); all started before any client."""
        calls: dict[tuple[str, str, str | None], Future[Any]] = {}
        targets: dict[tuple[str, str, str | None], Target] = {}
        for flow in flows:
            if flow.server is None:
                external = workloads.get(flow.workload.kind).external_target(flow.workload.params)
                if external is not None:
                    targets[flow.key] = external
                continue
            calls[flow.key] = self.engine.call(
                flow.server,
                "vtax.serve",
                {
                    "kind": flow.workload.kind,
                    "params": flow.workload.params.model_dump(mode="json"),
                    "bind": self.agents[flow.server].address,
                    "deadline": deadline + self.clocks[flow.server].offset_s,
                },
            )
        for key, future in calls.items():
            try:
                targets[key] = future.result(timeout=SERVE_TIMEOUT_S)
            except TimeoutError:
                raise InfrastructureError(
                    f"no answer from server agent {key[2]!r} within {SERVE_TIMEOUT_S:g} s"
                ) from None
        return targets

    def _dispatch(
        self,
        trial: Trial,
        flows: list[Flow],
        targets: dict[tuple[str, str, str | None], Target],
        start_at: float,
        deadline: float,
    ) -> list[tuple[Flow, Future[Any]]]:
        """Every client at once; times travel in each agent's own clock."""
        calls = []
        for flow in flows:
            offset = self.clocks[flow.client].offset_s
            future = self.engine.call(
                flow.client,
                "vtax.run_workload",
                {
                    "agent": flow.client,
                    "workload": flow.workload.label,
                    "kind": flow.workload.kind,
                    "params": flow.workload.params.model_dump(mode="json"),
                    "target": targets.get(flow.key),
                    "start_at": start_at + offset,
                    "duration": self.experiment.timing.duration,
                    "deadline": deadline + offset,
                    "run_id": self.run_id,
                    "tags": {
                        **self._tags(trial),
                        "zone": self.agents[flow.client].zone,
                        "workload": flow.workload.label,
                        "kind": flow.workload.kind,
                        "role": "client",
                    },
                    "warmup": self.experiment.timing.warmup,
                    "steady": self.experiment.timing.steady,
                    "clock_offset": offset,
                },
            )
            calls.append((flow, future))
        return calls

    def _collect(self, calls: list[tuple[Flow, Future[Any]]], start_at: float, deadline: float) -> list[dict[str, Any]]:
        """Wait for every agent until the deadline plus a margin; give up on the ones that do not answer.

        Results come back in the controller's clock: each agent's offset is taken out of its times.
        """
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
            offset = self.clocks[flow.client].offset_s
            for sample in result["samples"]:
                sample["t"] -= offset
            for key in ("start_at", "started_at", "ended_at"):
                if result.get(key) is not None:
                    result[key] -= offset
            if result.get("started_at") is not None:
                result["start_skew_s"] = result["started_at"] - start_at
            results.append(result)
        return results


def _failure(flow: Flow, status: str, reason: str) -> dict[str, Any]:
    return {
        "agent": flow.client,
        "workload": flow.workload.label,
        "status": status,
        "reason": reason,
        "samples": [],
        "summary": {},
    }
