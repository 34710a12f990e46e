"""The run loop: for every trial, enter the condition, start servers, start all load at one common
time, collect samples and host counters, enforce the deadline, store everything, leave the condition.
"""

from __future__ import annotations

import secrets
import time
from concurrent.futures import Future, wait
from datetime import UTC, datetime
from typing import Any

import workloads
from controller.analysis import trial_kpis
from controller.engine import AgentLost, EmbeddedEngine
from controller.errors import InfrastructureError
from controller.events import Events
from controller.hooks import HookError, run_hooks
from controller.hostcounters import LocalHostCollector
from controller.plan import Trial, make_plan
from controller.relay import RelayProcess
from controller.spec import ConditionSpec, Experiment
from controller.store import Store
from workloads.base import Target

SERVE_TIMEOUT_S = 15.0
KILL_MARGIN_S = 5.0  # after the deadline, the controller kills an agent that has not answered


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


class RunLoop:
    """Executes one experiment in the embedded engine and stores everything it measures."""

    def __init__(self, experiment: Experiment, *, store: Store, spec_path: str | None, events: Events | None = None):
        self.experiment = experiment
        self.store = store
        self.spec_path = spec_path
        self.events = events or Events()
        self.run_id = new_run_id()

    def execute(self) -> str:
        """Run every trial; returns the run id. Hook failures abort the run (InfrastructureError)."""
        plan = make_plan(self.experiment)
        self.store.create_run(
            run_id=self.run_id,
            name=self.experiment.name,
            engine="embedded",
            spec_path=self.spec_path,
            spec=self.experiment.model_dump(mode="json"),
        )
        self.events.run_start.fire(run_id=self.run_id, trials=plan)
        status, reason = "completed", ""
        try:
            agents = [a.name for a in self.experiment.agents]
            with EmbeddedEngine(agents, on_progress=self._progress) as engine:
                for trial in plan:
                    self._trial(engine, trial, len(plan))
        except KeyboardInterrupt:
            status, reason = "interrupted", "stopped by the user"
            raise
        except InfrastructureError as exc:
            status, reason = "aborted", str(exc)
            raise
        except Exception as exc:  # a bug: keep what was measured and say the run did not complete
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.store.finish_run(self.run_id, status, reason)
            self.events.run_end.fire(run_id=self.run_id, status=status)
        return self.run_id

    def _progress(self, agent: str, workload: str, values: dict[str, float]) -> None:
        self.events.agent_progress.fire(agent=agent, workload=workload, values=values)

    def _condition(self, name: str) -> ConditionSpec:
        return next(c for c in self.experiment.conditions if c.name == name)

    def _trial(self, engine: EmbeddedEngine, trial: Trial, total: int) -> None:
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
        hook_args = {"condition": condition.name, "env": env, "timeout": self.experiment.hook_timeout}
        try:
            run_hooks(condition.setup, stage="setup", **hook_args)
            self._measure(engine, trial, total, condition, row)
        except HookError as exc:
            row["reason"] = str(exc)
            raise
        except KeyboardInterrupt:
            row["status"], row["reason"] = "interrupted", "stopped by the user"
            raise
        finally:
            row["ended"] = row["ended"] or time.time()
            self.store.add_trial(self.run_id, row)
            try:
                run_hooks(condition.teardown, stage="teardown", **hook_args)
            finally:
                self.events.trial_end.fire(
                    trial=trial, total=total, status=row["status"], reason=row["reason"], kpis=row.get("kpis", {})
                )

    def _measure(
        self, engine: EmbeddedEngine, trial: Trial, total: int, condition: ConditionSpec, row: dict[str, Any]
    ) -> None:
        timing = self.experiment.timing
        serve_deadline = time.time() + SERVE_TIMEOUT_S + timing.lead + timing.duration + timing.grace
        relays: list[RelayProcess] = []
        collector: LocalHostCollector | None = None
        try:
            try:
                targets = self._start_servers(engine, serve_deadline)
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
            collector = LocalHostCollector(
                start_at=start_at,
                seconds=timing.duration,
                on_sample=lambda sample: self.events.host_sample.fire(trial=trial, sample=sample),
            ).start()
            calls = self._dispatch(engine, targets, start_at, deadline)
            results = self._collect(engine, calls, deadline)
        finally:
            host_samples = collector.stop() if collector else []
            for relay in relays:
                relay.stop()
        assert collector is not None
        self.store.add_host_samples(self.run_id, trial.index, collector.host, host_samples)
        for result in results:
            self.store.add_agent_result(self.run_id, trial.index, result)
        samples = [{**s, "agent": r["agent"], "workload": r["workload"]} for r in results for s in r["samples"]]
        row["kpis"] = trial_kpis(self.experiment, row, samples, host_samples)
        failed = [r for r in results if r["status"] != "ok"]
        if failed:
            worst = next((r for r in failed if r["status"] == "killed"), failed[0])
            row["status"] = "killed" if worst["status"] in ("killed", "deadline_exceeded") else worst["status"]
            row["reason"] = f"{worst['workload']} on {worst['agent']}: {worst['reason']}"
        else:
            row["status"] = "ok"

    def _start_servers(self, engine: EmbeddedEngine, deadline: float) -> dict[tuple[str, str], Target]:
        """One server per (workload, client agent): iperf3 serves one test at a time."""
        calls: dict[tuple[str, str], Future[Any]] = {}
        targets: dict[tuple[str, str], Target] = {}
        for entry in self.experiment.workloads:
            external = workloads.get(entry.kind).external_target(entry.params) if entry.server is None else None
            for agent in entry.agents:
                key = (entry.label, agent)
                if external is not None:
                    targets[key] = external
                elif entry.server is not None:
                    calls[key] = engine.call(
                        entry.server,
                        "vtax.serve",
                        {
                            "kind": entry.kind,
                            "params": entry.params.model_dump(mode="json"),
                            "bind": self.experiment.agent(entry.server).address,
                            "deadline": deadline,
                        },
                    )
        for key, future in calls.items():
            try:
                targets[key] = future.result(timeout=SERVE_TIMEOUT_S)
            except TimeoutError:
                raise InfrastructureError(f"no answer from the server agent within {SERVE_TIMEOUT_S:g} s") from None
        return targets

    def _dispatch(
        self, engine: EmbeddedEngine, targets: dict[tuple[str, str], Target], start_at: float, deadline: float
    ) -> list[tuple[str, str, Future[Any]]]:
        calls = []
        for entry in self.experiment.workloads:
            for agent in entry.agents:
                future = engine.call(
                    agent,
                    "vtax.run_workload",
                    {
                        "agent": agent,
                        "workload": entry.label,
                        "kind": entry.kind,
                        "params": entry.params.model_dump(mode="json"),
                        "target": targets.get((entry.label, agent)),
                        "start_at": start_at,
                        "duration": self.experiment.timing.duration,
                        "deadline": deadline,
                    },
                )
                calls.append((agent, entry.label, future))
        return calls

    def _collect(
        self, engine: EmbeddedEngine, calls: list[tuple[str, str, Future[Any]]], deadline: float
    ) -> list[dict[str, Any]]:
        """Wait for every agent until the deadline plus a margin; kill the ones that do not answer."""
        wait([f for _, _, f in calls], timeout=max(0.0, deadline + KILL_MARGIN_S - time.time()))
        results = []
        for agent, workload, future in calls:
            if not future.done():
                engine.kill(agent, "no result by the trial deadline")
            try:
                results.append(future.result(timeout=0))
            except Exception as exc:
                status = "killed" if isinstance(exc, AgentLost) else "error"
                results.append(
                    {
                        "agent": agent,
                        "workload": workload,
                        "status": status,
                        "reason": str(exc),
                        "samples": [],
                        "summary": {},
                    }
                )
        return results
