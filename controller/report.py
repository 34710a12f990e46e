"""What a person sees: the live display while trials run, and the summary table of a run."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from agent.wire import HostSample, TrialRecord
from controller import stats
from controller.comparison import RunComparison
from controller.consolidation import modelled_text
from controller.events import Events
from controller.hooks import HookRun
from controller.plan import Trial
from controller.power import Plan
from controller.search import capacity_text
from controller.soakreport import memory_lines, soak_table
from controller.spec import SlaRule
from controller.stats import Description
from controller.tiles import tiles_text
from controller.zones import ZoneAudit

HEADLINE_METRICS = ("throughput_gbps", "achieved_pct", "host.cpu_pct")


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"


def duration(seconds: float) -> str:
    """A span of time as a person reads it: 45 s, 3 min 20 s, 5 h 12 min, 2 d 0 h."""
    total = max(0, round(seconds))
    if total < 90:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 90:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _headline(kpis: dict[str, float]) -> str:
    parts = [f"{name} {_fmt(value)}" for name, value in kpis.items() if name.endswith(HEADLINE_METRICS)]
    return "  ".join(parts)


class LiveDisplay:
    """Trial i/n, condition, phase and the host's live CPU and network while a run goes on."""

    def __init__(
        self,
        console: Console,
        events: Events,
        *,
        warmup: float,
        steady: float,
        verbose: bool = False,
        sla: Mapping[str, SlaRule] | None = None,
    ) -> None:
        """With `verbose`, every hook's command and output is printed as it runs; `sla`: the rules whose limits
        each trial's KPIs are held to as it ends, so a breach shows while the run goes on."""
        self.console = console
        self._sla = dict(sla or {})
        self._over: dict[str, str] = {}  # metric → how the latest trial broke its SLA limit
        self._warmup, self._steady = warmup, steady
        self._trial: Trial | None = None
        self._total = 0
        self._start_at = 0.0
        self._duration = 0.0
        self._hosts: dict[str, float | None] = {}  # host → its latest CPU %
        self._live_values: dict[tuple[str, str], dict[str, float]] = {}
        self._run_started = time.time()
        self._done = 0  # trials ended so far
        self._live = Live(console=console, refresh_per_second=4, get_renderable=self._render, transient=True)
        events.trial_start.add_listener(self._on_trial_start)
        events.host_sample.add_listener(self._on_host_sample)
        events.agent_progress.add_listener(self._on_progress)
        events.trial_end.add_listener(self._on_trial_end)
        events.trial_kpis.add_listener(self._on_trial_kpis)
        if verbose:
            events.hook_ran.add_listener(lambda *, trial, hook: print_hook(self.console, trial.index, hook))
        events.run_start.add_listener(self._on_run_start)
        events.agents_lost.add_listener(self._on_agents_lost)
        events.agents_back.add_listener(self._on_agents_back)
        events.segment_recovered.add_listener(self._on_segment_recovered)
        events.run_end.add_listener(lambda **_: self._live.stop())

    def _on_run_start(self, *, trials: list[Trial], **_: object) -> None:
        self._run_started, self._total, self._done = time.time(), len(trials), 0
        self._live.start()

    def _on_trial_start(self, *, trial: Trial, total: int, start_at: float, duration: float) -> None:
        self._trial, self._total, self._start_at, self._duration = trial, total, start_at, duration
        self._hosts, self._live_values = {}, {}

    def _on_progress(self, *, agent: str, workload: str, values: dict[str, float]) -> None:
        self._live_values[(agent, workload)] = values

    def _on_host_sample(self, *, trial: Trial, sample: HostSample) -> None:
        if self._trial is not None and trial.index == self._trial.index:  # vCenter's come after their trial
            self._hosts[sample.get("host", "")] = sample.get("values", {}).get("host.cpu_pct")

    def _on_trial_end(self, *, trial: Trial, total: int, record: TrialRecord, kpis: dict[str, float]) -> None:
        if self._trial is not None and self._trial.index == trial.index:  # a soak's next segment may be on already
            self._trial = None
        self._total = total
        self._done += 1
        status = record["status"]
        line = Text(f"trial {trial.index + 1}/{total}  {trial.label}  ")
        line.append(status, style="green" if status == "ok" else "red")
        line.append(f"  {_headline(kpis)}" if status == "ok" else f"  {record['reason']}")
        self.console.print(line)
        if status == "ok":
            self._hold_to_sla(trial, kpis)

    def _hold_to_sla(self, trial: Trial, kpis: dict[str, float]) -> None:
        """Say when a trial's KPI goes over an SLA limit, and when one comes back within it. The SLA judges the
        run's (or a soak window's) mean at the end: this is an early sign, not the verdict."""
        for name, rule in self._sla.items():
            value = kpis.get(name)
            if value is None:
                continue
            broken = [
                f"{_fmt(value)} {sign} {kind} {rule_limit:g}"
                for kind, sign, rule_limit, over in (
                    ("min", "<", rule.min, rule.min is not None and value < rule.min),
                    ("max", ">", rule.max, rule.max is not None and value > rule.max),
                )
                if over
            ]
            if broken and name not in self._over:
                self._over[name] = f"{name} {broken[0]} (trial {trial.index + 1})"
                self.console.print(Text(f"SLA: {self._over[name]}, already over its limit", "yellow"))
            elif not broken and name in self._over:
                del self._over[name]
                self.console.print(Text(f"SLA: {name} back within its limit (trial {trial.index + 1})", "green"))

    def _on_agents_lost(self, *, agents: list[str], timeout: float) -> None:
        self.console.print(
            Text(f"agent(s) {', '.join(agents)} lost: waiting up to {duration(timeout)} for them", "yellow")
        )

    def _on_agents_back(self, *, agents: list[str], missing: list[str], seconds: float) -> None:
        if agents:
            self.console.print(Text(f"agent(s) {', '.join(agents)} back after {duration(seconds)}", "green"))
        if missing:
            self.console.print(Text(f"agent(s) {', '.join(missing)} still lost: the next trial goes on without", "red"))

    def _on_segment_recovered(self, *, trial: Trial, status: str, samples: int) -> None:
        """A segment the controller was gone for, stored from what its agents kept."""
        line = Text(
            f"segment {(trial.segment or 0) + 1}/{trial.segments} ({trial.condition}) collected from its agents: "
        )
        line.append(f"{samples} samples, {status}", style="green" if status == "ok" else "yellow")
        self.console.print(line)

    def _on_trial_kpis(self, *, trial: Trial, kpis: dict[str, float]) -> None:
        """A trial's KPIs again, once host counters that come after it (vCenter's) are in."""
        line = Text(f"trial {trial.index + 1}/{self._total}  {trial.label}  ")
        line.append("host counters in", style="cyan")
        line.append(f"  {_headline(kpis)}")
        self.console.print(line)

    def _phase(self, elapsed: float) -> str:
        if elapsed < 0:
            return "starting"
        if elapsed < self._warmup:
            return "warm-up"
        if elapsed < self._warmup + self._steady:
            return "steady"
        return "cool-down" if elapsed < self._duration else "collecting results"

    def _run_line(self) -> str:
        """The whole run: how long it has taken, and about how long it has left at the pace so far."""
        elapsed = time.time() - self._run_started
        line = f"run {duration(elapsed)}"
        if self._done:
            line += f", about {duration(elapsed / self._done * (self._total - self._done))} left"
        return line

    def _render(self) -> Any:
        if self._trial is None:
            return Text("")
        elapsed = time.time() - self._start_at
        phase = self._phase(elapsed)
        clock = "" if elapsed >= self._duration else f"  {max(0.0, elapsed):.0f}/{self._duration:.0f} s"
        head = Text(
            f"trial {self._trial.index + 1}/{self._total}  {self._trial.label}  {phase}{clock}  ·  {self._run_line()}",
            style="bold",
        )
        bar = ProgressBar(total=self._duration, completed=min(max(elapsed, 0.0), self._duration), width=40)
        cpus = "  ".join(f"{name} {_fmt(cpu)} %" for name, cpu in sorted(self._hosts.items())) if self._hosts else "–"
        host = Text(f"host CPU {cpus}")
        live = [
            Text(
                f"{agent if agent == workload else f'{agent} {workload}'}: "
                + "  ".join(f"{name} {_fmt(value)}" for name, value in values.items())
            )
            for (agent, workload), values in sorted(self._live_values.items())
        ]
        progress = Table.grid(padding=(0, 2))
        progress.add_row(bar, host)
        over = [Text(f"over SLA now: {'; '.join(self._over.values())}", "yellow")] if self._over else []
        return Group(head, progress, *live, *over)


def _mean_cell(described: dict[str, Any]) -> str:
    if described["mean"] is None:
        return "–"
    if described["ci95"] is None:
        return f"{_fmt(described['mean'])} ({described['n']})"
    half = (described["ci95"][1] - described["ci95"][0]) / 2
    return f"{_fmt(described['mean'])} ± {_fmt(half, 2)} ({described['n']})"


def _mean_only(described: Description) -> str:
    return "–" if described["mean"] is None else f"{_fmt(described['mean'])} ({described['n']})"


def _overhead_cells(over: dict[str, Any], better: str) -> tuple[Text, str]:
    """The change in % with its CI, coloured when significant (red: worse), and the p-value (Holm-adjusted where
    there are several conditions). A change not found says how small a one the test could have seen."""
    if over["pct"] is None:
        return Text("–"), ""
    text = f"{over['pct']:+.1f} %"
    if over["ci95_pct"] is not None:
        text += f" [{over['ci95_pct'][0]:+.1f}, {over['ci95_pct'][1]:+.1f}]"
    found = stats.significant(over)
    if not found and over.get("mde_pct") is not None:
        text += f" · could see ±{over['mde_pct']:.1f} %"
    worse = (over["pct"] < 0) if better == "higher" else (over["pct"] > 0)
    style = ("red" if worse else "green") if found else "dim"
    p_value = over.get("p_adjusted", over["p_value"])
    return Text(text, style=style), "" if p_value is None else f"{p_value:.2g}"


def _rank_cell(metric: dict[str, Any], condition: str) -> str:
    ranked = {r["condition"]: r for r in metric.get("ranking", [])}
    if condition not in ranked:
        return ""
    low, high = ranked[condition]["rank_interval"]
    return str(low) if low == high else f"{low}–{high}"


def summary_table(result: dict[str, Any]) -> Table:
    """One row per metric and condition: mean ± 95 % CI half-width, the change against the baseline (paired by
    repetition where the trials ran side by side), its p-value and the condition's rank interval."""
    baseline = result["baseline"]
    table = Table(title=f"{result['name']} · run {result['run_id']} · baseline {baseline}", title_justify="left")
    table.add_column("metric", no_wrap=True)
    table.add_column("condition", no_wrap=True)
    table.add_column("mean ± 95 % CI (n)", justify="right", no_wrap=True)
    table.add_column(f"vs {baseline} [95 % CI]", justify="right", no_wrap=True)
    several = len(result["conditions"]) > 2
    table.add_column("p (Holm)" if several else "p", justify="right", no_wrap=True)
    table.add_column("rank", justify="right", no_wrap=True)
    for name, metric in result["metrics"].items():
        for i, condition in enumerate(result["conditions"]):
            change, p_value = (
                (Text("baseline", style="dim"), "")
                if condition == baseline
                else _overhead_cells(metric["overhead"][condition], metric["better"])
            )
            table.add_row(
                Text(f"{name} [{metric['unit']}]") if i == 0 else "",
                condition,
                _mean_cell(metric["by_condition"][condition]),
                change,
                p_value,
                _rank_cell(metric, condition),
                end_section=i == len(result["conditions"]) - 1,
            )
    methods = {o.get("method") for m in result["metrics"].values() for o in m["overhead"].values()}
    if methods == {"paired"}:
        table.caption = "changes paired by repetition (the trials of one repetition ran side by side)"
    elif "welch" in methods:
        table.caption = "changes from condition means (Welch): the trials were not paired by repetition"
    return table


def print_comparison(console: Console, comparison: RunComparison) -> None:
    """`vtax compare`: a table of every change from run A to run B (red: worse, green: better, by the
    Holm-adjusted p-value), then what differs in how the two runs were made."""
    table = Table(
        title=f"{comparison['name_b']} · run {comparison['b']} against {comparison['a']}", title_justify="left"
    )
    for column in ("metric", "condition"):
        table.add_column(column, no_wrap=True)
    for column in ("A mean (n)", "B mean (n)", "change [95 % CI]", "p (Holm)"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("verdict")
    styles = {"worse": "red", "better": "green"}
    changes = comparison["changes"]
    for i, change in enumerate(changes):
        over = change["change"]
        text = "–" if over["pct"] is None else f"{over['pct']:+.1f} %"
        if over["ci95_pct"] is not None:
            text += f" [{over['ci95_pct'][0]:+.1f}, {over['ci95_pct'][1]:+.1f}]"
        verdict = change["verdict"]
        if verdict == "no change detected" and over.get("mde_pct") is not None:
            verdict = f"none seen (could see ±{over['mde_pct']:.3g} %)"
        p_value = over.get("p_adjusted")
        first = i == 0 or changes[i - 1]["metric"] != change["metric"]
        last = i == len(changes) - 1 or changes[i + 1]["metric"] != change["metric"]
        table.add_row(
            f"{change['metric']} [{change['unit']}]" if first else "",
            change["condition"],
            _mean_only(change["a"]),
            _mean_only(change["b"]),
            Text(text, style=styles.get(change["verdict"], "dim")),
            "" if p_value is None else f"{p_value:.2g}",
            Text(verdict, style=styles.get(change["verdict"], "dim")),
            end_section=last,
        )
    table.caption = "unpaired (Welch): two runs share no block; p Holm-adjusted over every change"
    console.print(table)
    if comparison["unmatched"]:
        console.print(Text("measured in one run only: " + ", ".join(comparison["unmatched"]), style="yellow"))
    if not comparison["differences"]:
        console.print("how they were made: no difference (same spec, machines and versions)")
        return
    differences = Table(title="what differs in how they were made", title_justify="left")
    differences.add_column("item")
    differences.add_column(f"run {comparison['a']}")
    differences.add_column(f"run {comparison['b']}")
    for difference in comparison["differences"]:
        differences.add_row(difference["key"], difference["a"] or "–", difference["b"] or "–")
    console.print(differences)


def print_plan(console: Console, planned: Plan, spec_repetitions: int) -> None:
    """`vtax plan`: per metric, the noise it was planned from and the repetitions a change of the asked size
    needs (also if the noise is at its 90 % upper bound), and what the spec's own repetitions could see."""
    table = Table(
        title=f"{planned['spec']}: repetitions per condition to find ±{planned['detect_pct']:g} % "
        f"({planned['power'] * 100:.0f} % power, α {planned['alpha']:.3g}), noise from run {planned['noise_run']}",
        title_justify="left",
    )
    table.add_column("metric", no_wrap=True)
    table.add_column("method")
    table.add_column("noise sd (df)", justify="right")
    table.add_column("repetitions", justify="right")
    table.add_column("if noisier (90 % bound)", justify="right")
    table.add_column(f"{spec_repetitions} repetitions see", justify="right")
    for row in planned["metrics"]:
        if row["noise_pct"] is None:  # no repetition to vary, or no positive value to take a ratio of
            table.add_row(row["metric"], row["method"], "–", "cannot tell", "", "")
            continue
        table.add_row(
            row["metric"],
            row["method"],
            f"{row['noise_pct']:.2g} % ({row['noise_df']})",
            _count(row["repetitions"]),
            _count(row["repetitions_cautious"]),
            "–" if row["spec_detects_pct"] is None else f"±{row['spec_detects_pct']:.3g} %",
        )
    table.caption = "paired: per-block log ratios (trials side by side); welch: within-condition variation"
    console.print(table)


def _count(repetitions: int | None) -> Text:
    return Text("over 1000", style="red") if repetitions is None else Text(str(repetitions))


def _bounds(rule: dict[str, float | None]) -> str:
    limits = [f"{sign} {rule[key]:g}" for key, sign in (("min", "≥"), ("max", "≤")) if rule.get(key) is not None]
    return " and ".join(limits)


def capacity_table(result: dict[str, Any]) -> Table:
    """One row per condition (and further goal) of a search: its capacity with the bracket, the load its final
    trials carried (mean ± 95 % CI), that against the baseline's, and the trials it took."""
    search = result["spec"]["search"]
    criteria = ", ".join(f"{metric} {_bounds(rule)}" for metric, rule in search["criteria"].items())
    goals = search.get("goals") or {}
    caption = "; ".join(
        f"{goal}: " + ", ".join(f"{metric} {_bounds(rule)}" for metric, rule in rules.items())
        for goal, rules in goals.items()
    )
    table = Table(
        title=f"capacity of {search['workload']}: the highest offered load with {criteria}",
        title_justify="left",
        caption=caption or None,
        caption_justify="left",
    )
    table.add_column("condition", no_wrap=True)
    table.add_column("capacity [bracket]", justify="right")
    table.add_column("carried ± 95 % CI (n)", justify="right", no_wrap=True)
    table.add_column(f"vs {result['baseline']} [95 % CI]", justify="right", no_wrap=True)
    table.add_column("trials", justify="right")
    for condition, main in result["capacity"].items():
        for goal, found in [("", main), *main.get("goals", {}).items()]:
            over = found["overhead"]
            change = Text("baseline", style="dim") if condition == result["baseline"] else Text("–")
            if over is not None:
                change, _ = _overhead_cells(dict(over), "higher")
            table.add_row(
                f"{condition} · {goal}" if goal else condition,
                capacity_text(found, search),
                _mean_cell(dict(found["achieved"])),
                change,
                str(len(found["tried"])),
            )
    return table


def tiles_table(result: dict[str, Any]) -> Table:
    """One row per condition of a tiles search: the tiles it carries with the bracket, each tile criterion's
    worst tile over the final trials, the change against the baseline's with the range the brackets allow, and
    the trials it took; under it the one-line answer ("carries 14 tiles with none, 10 with rules-1000")."""
    spec = result["spec"]["tiles"]
    criteria = ", ".join(f"{metric} {_bounds(rule)}" for metric, rule in spec["criteria"].items())
    table = Table(
        title=f"tiles ({' + '.join(spec['workloads'])} each): the most with {criteria} in every tile",
        title_justify="left",
        caption=tiles_sentence(result),
        caption_justify="left",
    )
    table.add_column("condition", no_wrap=True)
    table.add_column("tiles [failed at]", justify="right")
    worst = [metric for metric in spec["criteria"] if not metric.startswith("host.")]
    for metric in worst:
        table.add_column(f"worst tile's {metric} (n)", justify="right", no_wrap=True)
    table.add_column(f"vs {result['baseline']} [range]", justify="right", no_wrap=True)
    table.add_column("trials", justify="right")
    for condition, found in result["tiles"].items():
        change = Text("baseline", style="dim") if condition == result["baseline"] else Text("–")
        if found["change_pct"] is not None:
            low, mid, high = found["change_pct"]
            change = Text(f"{mid:+.0f} % [{low:+.0f}, {high:+.0f}]", style="red" if high < 0 else "")
        table.add_row(
            condition,
            tiles_text(found, spec),
            *(_mean_cell(dict(found["worst"][metric])) for metric in worst),
            change,
            str(len(found["tried"])),
        )
    return table


def tiles_sentence(result: dict[str, Any]) -> str:
    """The tiles search's answer in one line: "carries 14 tiles with none, 10 with rules-1000 (-29 %)"."""
    parts = []
    for condition, found in result["tiles"].items():
        counts = {"found": "{value}", "agents_exhausted": "≥ {value}", "above_high": "≥ {value}", "below_low": "0"}
        count = counts.get(found["stop"])
        text = count.format(value=found["value"]) if count else "?"
        text += (" tiles" if not parts else "") + f" with {condition}"
        if found["change_pct"] is not None:
            text += f" ({found['change_pct'][1]:+.0f} %)"
        parts.append(text)
    return "carries " + ", ".join(parts)


def consolidation_table(result: dict[str, Any]) -> Table:
    """The modelled VMs per host of each condition, beside the tiles measured where the run has them."""
    profile = result["spec"]["profile"]
    demand = f"{profile['gbps_per_vm']:g} Gbit/s and {profile['cpu_pct_per_vm']:g} % CPU per VM"
    table = Table(
        title=f"modelled VMs per host ({demand}, {profile['cpu_budget_pct']:g} % of the host's CPU): a model on "
        "host CPU per Gbit/s, not a count",
        title_justify="left",
    )
    table.add_column("condition", no_wrap=True)
    table.add_column("host CPU per Gbit/s", justify="right")
    table.add_column("VMs per host [95 % CI]", justify="right")
    tiles = result.get("tiles") or {}
    if tiles:
        table.add_column("tiles measured", justify="right")
    for condition, found in result["consolidation"].items():
        row = [condition, _fmt(found["cpu_per_gbps"]), modelled_text(found)]
        if tiles:
            row.append(tiles_text(tiles[condition], result["spec"]["tiles"]) if condition in tiles else "–")
        table.add_row(*row)
    return table


def print_hook(console: Console, trial_idx: int, hook: HookRun) -> None:
    """One hook as it ran: the command, its exit code and time, and what it printed, indented."""
    code = "timed out" if hook["exit_code"] is None else f"exit {hook['exit_code']}"
    style = "dim" if hook["exit_code"] == 0 else "red"
    console.print(
        Text(f"trial {trial_idx} {hook['stage']}: {hook['command']} ({code}, {hook['seconds']:.2f} s)", style=style)
    )
    for line in hook["output"].rstrip().splitlines():
        console.print(Text(f"    {line}", style="dim"))


def print_result(console: Console, result: dict[str, Any]) -> None:
    """Why the run stopped (if it did not complete), the summary table, validity and SLA findings, and where the
    run is stored."""
    if result["status"] != "completed":
        console.print(Text(f"run {result['run_id']} {result['status']}: {result['reason']}", style="red"))
    if result.get("capacity"):
        console.print(capacity_table(result))
    if result.get("tiles"):
        console.print(tiles_table(result))
    if result.get("consolidation"):
        console.print(consolidation_table(result))
    if result.get("soak"):
        console.print(soak_table(result["soak"]))
        for line in memory_lines(result["soak"]):
            console.print(line)
    if result["metrics"]:
        console.print(summary_table(result))
    else:
        console.print(Text("no trial was measured, so there is nothing to summarise", style="yellow"))
    for issue in result["validity"]:
        style = "red" if issue["level"] == "error" else "yellow"
        console.print(Text(f"{issue['level']}: {issue['message']}", style=style))
    for check in result["sla"]:
        if not check["ok"]:
            console.print(
                Text(
                    f"SLA failed: {check['metric']} {check['rule']} {check['limit']} under {check['condition']} "
                    f"(got {_fmt(check['value'])})",
                    style="red",
                )
            )
    console.print(f"run {result['run_id']} ({result['status']}) stored in {result['store']}")


def print_zone_audit(console: Console, found: ZoneAudit) -> None:
    """`vtax audit zones`: what was read, one row per finding, and each violation in words."""
    source = f"migrations of the last {found['days']} day(s) replayed" if found["days"] else "no migration history"
    console.print(
        f"{found['hosts']} hosts, {found['vms']} VMs, {found['zoned_vms']} of them in zones "
        f"({', '.join(found['zones']) or 'none found'}); {source}"
        + ("" if found["appliance_check"] else "; no appliance VMs named (appliances:), so none is looked for")
    )
    table = Table("finding", "where", "zones", "VMs", "verdict")
    for finding in found["findings"]:
        where = finding["host"] or f"cluster {finding['cluster']}"
        vms = "; ".join(
            f"{zone}: {', '.join(names[:3])}{' …' if len(names) > 3 else ''}" for zone, names in finding["vms"].items()
        )
        verdict = "VIOLATION"
        if finding["allowed"]:
            verdict = f"allowed ({finding['why']})" if finding["why"] else "allowed"
        table.add_row(finding["kind"].replace("_", " "), where, ", ".join(finding["zones"]), vms, verdict)
    console.print(table if found["findings"] else "no host joins zones, no rule lets them meet, no migration did")
    for finding in found["findings"]:
        if not finding["allowed"]:
            when = f"{finding['time'][:19]} " if "time" in finding else ""
            console.print(f"  {when}{finding['message']}")
    policy = found["policy"] or "the default policy (no zone shares a host)"
    console.print(f"{found['violations']} violation(s) of {policy}")
