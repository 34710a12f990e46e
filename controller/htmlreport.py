"""`vtax report` and `vtax compare --html`: one self-contained HTML page per study (one run, or several runs of
one spec) or comparison of two runs, to hand on.

Plotly draws the figures (its JavaScript is inlined once, so the page opens offline and makes no network
request; plotly because its Python API builds the forest plot, strip plots and shaded time series directly,
and one inlined library serves every figure); jinja2 fills the page (autoescaped). The contents follow the
report items of RFC 9411: test bed (provenance), device configuration (the spec's conditions and hooks),
traffic profile (workloads and timing), and results (verdicts, figures, ranking, validity).
"""

from __future__ import annotations

import importlib.resources
import json
import statistics
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import jinja2
import plotly.graph_objects as go
import plotly.offline
import yaml
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from controller import stats
from controller.comparison import RunComparison
from controller.report import tiles_sentence
from controller.search import capacity_text
from controller.soak import SoakResult
from controller.soakreport import steps_text, trend_text
from controller.stats import Overhead
from controller.store import Store
from controller.tiles import tiles_text
from workloads.base import MetricInfo

PHASE_COLOURS = {"warm-up": "rgba(200,200,200,0.25)", "cool-down": "rgba(200,200,200,0.25)"}
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


COLOURS = qualitative.Plotly  # one colour per condition across subplots


def verdict(name: str, metric: dict[str, Any], baseline: str) -> str:
    """One sentence per metric: each condition's change with its CI, not-found changes with what could have been
    seen, and the ranking with its intervals."""
    parts = []
    for condition, over in metric["overhead"].items():
        if over["pct"] is None:
            parts.append(f"{condition}: not measured")
        elif stats.significant(over) and over["ci95_pct"]:
            low, high = over["ci95_pct"]
            parts.append(f"{condition} {over['pct']:+.1f} % [{low:+.1f}, {high:+.1f}]")
        elif over.get("mde_pct") is not None:
            parts.append(f"{condition}: no difference detected (the test could have seen ±{over['mde_pct']:.1f} %)")
        else:
            parts.append(f"{condition}: no difference detected")
    ranked = metric.get("ranking", [])
    order = ", then ".join(
        r["condition"]
        + (
            f" (rank {r['rank_interval'][0]}–{r['rank_interval'][1]})"
            if r["rank_interval"][0] != r["rank_interval"][1]
            else ""
        )
        for r in ranked
    )
    adjusted = [o.get("p_adjusted") for o in metric["overhead"].values() if o.get("p_adjusted") is not None]
    p_text = (
        f", adjusted p ≤ {max(adjusted):.2g}"
        if adjusted and all(stats.significant(o) for o in metric["overhead"].values())
        else ""
    )
    return f"{name} vs {baseline}: " + "; ".join(parts) + (f". Ranked best first: {order}{p_text}" if order else "")


def _figure_html(figure: go.Figure, height: int | None = 360) -> str:
    figure.update_layout(margin={"l": 60, "r": 20, "t": 60, "b": 40}, template="plotly_white")
    if height is not None:
        figure.update_layout(height=height)
    return str(figure.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG))


def forest_plot(result: dict[str, Any]) -> str:
    """Every metric's overhead per condition with its 95 % CI: one panel per metric."""
    panels = [
        (name, [(condition, over) for condition, over in metric["overhead"].items() if over["pct"] is not None])
        for name, metric in result["metrics"].items()
    ]
    return _forest(panels, "Overhead against the baseline, % [95 % CI]; red: found (Holm-adjusted p < 0.05)")


def change_plot(comparison: RunComparison) -> str:
    """Every metric's change from run A to run B per condition with its 95 % CI: one panel per metric."""
    panels: dict[str, list[tuple[str, Overhead]]] = defaultdict(list)
    for change in comparison["changes"]:
        if change["change"]["pct"] is not None:
            panels[change["metric"]].append((change["condition"], change["change"]))
    return _forest(list(panels.items()), f"Change from {comparison['a']} to {comparison['b']}, % [95 % CI]")


def _forest(panels: list[tuple[str, list[tuple[str, Overhead]]]], title: str) -> str:
    """Changes with their 95 % CIs, one panel per metric, each on its own scale (a host counter's ±200 % would
    otherwise squeeze a throughput's ±5 % to a dot); red where found (`stats.significant`)."""
    panels = [(name, rows) for name, rows in panels if rows]
    if not panels:  # nothing was measured at the found loads (a search that found no capacity)
        return ""
    most = max(len(rows) for _, rows in panels)
    height = 80 + len(panels) * (70 + 28 * most)
    figure = make_subplots(
        rows=len(panels),
        cols=1,
        subplot_titles=[name for name, _ in panels],
        vertical_spacing=min(60 / height, 1 / max(1, len(panels) - 1)),  # 60 px between panels: room for a title
    )
    for row, (_, rows) in enumerate(panels, 1):
        figure.add_trace(
            go.Scatter(
                x=[over["pct"] for _, over in rows],
                y=[label for label, _ in rows],
                mode="markers",
                marker={"size": 10, "color": ["#c0392b" if stats.significant(over) else "#7f8c8d" for _, over in rows]},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [(over["ci95_pct"] or [0, 0])[1] - (over["pct"] or 0) for _, over in rows],
                    "arrayminus": [(over["pct"] or 0) - (over["ci95_pct"] or [0, 0])[0] for _, over in rows],
                },
                hovertemplate="%{y}: %{x:.1f} %<extra></extra>",
                showlegend=False,
            ),
            row=row,
            col=1,
        )
        figure.add_vline(x=0, line_dash="dash", line_color="#555", row=row, col=1)
    figure.update_layout(title=title, height=height)
    return _figure_html(figure, height=None)


def capacity_plot(result: dict[str, Any]) -> str:
    """A search's every trial: the load it carried against the load it offered, per condition, passed trials
    filled and failed ones open, with each found capacity marked: where a path's curve leaves the diagonal is
    its knee."""
    figure = go.Figure()
    unit = next(iter(result["capacity"].values()))["unit"]
    for condition, found in result["capacity"].items():
        tried = [t for t in found["tried"] if t["achieved"] is not None]
        figure.add_trace(
            go.Scatter(
                x=[t["load"] for t in tried],
                y=[t["achieved"] for t in tried],
                mode="markers",
                name=condition,
                marker={
                    "size": 10,
                    "symbol": ["circle" if t["passed"] else "circle-open" for t in tried],
                },
                text=["passed" if t["passed"] else "; ".join(t["broken"]) for t in tried],
                hovertemplate=f"offered %{{x:.4g}} {unit}, carried %{{y:.4g}}: %{{text}}<extra>{condition}</extra>",
            )
        )
        if found["value"] is not None:
            figure.add_vline(x=found["value"], line_dash="dot", annotation_text=f"{condition} {found['value']:.4g}")
    figure.update_layout(
        title="Every trial of the search: carried against offered load (open: failed a criterion)",
        xaxis={"title": f"offered, {unit}", "type": "log"},
        yaxis={"title": f"carried, {unit}", "type": "log"},
    )
    return _figure_html(figure, height=420)


def tiles_plot(result: dict[str, Any]) -> str:
    """A tiles search's every trial: the worst tile's value of each tile criterion against the number of
    tiles, per condition, passed trials filled and failed ones open, with the criterion's bound: where a
    condition's curve crosses the bound is how many VMs the host carries with it."""
    criteria = result["spec"]["tiles"]["criteria"]
    metrics = [metric for metric in criteria if not metric.startswith("host.")]
    figure = make_subplots(rows=max(1, len(metrics)), cols=1, subplot_titles=metrics)
    for row, metric in enumerate(metrics, start=1):
        for n, (condition, found) in enumerate(result["tiles"].items()):
            tried = [t for t in found["tried"] if metric in t["worst"]]
            figure.add_trace(
                go.Scatter(
                    x=[t["tiles"] for t in tried],
                    y=[t["worst"][metric] for t in tried],
                    mode="markers",
                    name=condition,
                    legendgroup=condition,
                    showlegend=row == 1,
                    marker={
                        "size": 10,
                        "color": COLOURS[n % len(COLOURS)],
                        "symbol": ["circle" if t["passed"] else "circle-open" for t in tried],
                    },
                    text=["passed" if t["passed"] else "; ".join(t["broken"]) for t in tried],
                    hovertemplate="%{x} tiles, worst tile %{y:.4g}: %{text}<extra>" + condition + "</extra>",
                ),
                row=row,
                col=1,
            )
        for bound in ("min", "max"):
            if criteria[metric].get(bound) is not None:
                figure.add_hline(y=criteria[metric][bound], line_dash="dot", row=row, col=1)
        figure.update_xaxes(title_text="tiles", dtick=1, row=row, col=1)
    figure.update_layout(
        title="Every trial of the tiles search: the worst tile against the number of tiles (open: failed)"
    )
    return _figure_html(figure, height=320 * max(1, len(metrics)))


def soak_plot(soak: SoakResult, names: list[str]) -> str:
    """A soak's timeline: each metric's segments over the hours, per condition, with each change point (a
    dashed line where the new level starts) and each significant trend (its Sen line)."""
    figure = make_subplots(rows=len(names), cols=1, subplot_titles=names, shared_xaxes=True)
    for row, name in enumerate(names, start=1):
        for n, (condition, drift) in enumerate(soak["metrics"][name].items()):
            colour = COLOURS[n % len(COLOURS)]
            figure.add_trace(
                go.Scatter(
                    x=drift["hours"],
                    y=drift["values"],
                    mode="lines+markers",
                    name=condition,
                    legendgroup=condition,
                    showlegend=row == 1,
                    line={"color": colour},
                    hovertemplate="hour %{x:.3f}: %{y:.4g}<extra>" + condition + "</extra>",
                ),
                row=row,
                col=1,
            )
            found = drift["trend"]
            if found["verdict"] in ("increasing", "decreasing") and found["slope_per_h"] is not None:
                hours, slope = drift["hours"], found["slope_per_h"]
                intercept = statistics.median(v - slope * h for h, v in zip(hours, drift["values"], strict=True))
                ends = [hours[0], hours[-1]]
                figure.add_trace(
                    go.Scatter(
                        x=ends,
                        y=[intercept + slope * h for h in ends],
                        mode="lines",
                        line={"color": colour, "dash": "dot"},
                        name=f"{condition} trend",
                        showlegend=False,
                        hovertemplate=f"{found['pct_per_h']:+.2f} %/h<extra>{condition}</extra>",
                    ),
                    row=row,
                    col=1,
                )
            at = dict(zip(drift["segments"], drift["hours"], strict=True))
            for step in drift["change_points"]:
                figure.add_vline(x=at[step["segment"]], line_dash="dash", line_color=colour, row=row, col=1)
    figure.update_xaxes(title_text="hours from the start", row=len(names), col=1)
    figure.update_layout(title="The soak over time: change points dashed, significant trends dotted")
    return _figure_html(figure, height=260 * len(names) + 80)


def distributions(result: dict[str, Any], name: str) -> str:
    """One metric's value per repetition, every repetition a point, per condition, with the mean ± CI."""
    metric = result["metrics"][name]
    figure = go.Figure()
    for condition, described in metric["by_condition"].items():
        figure.add_trace(
            go.Box(
                y=described["values"],
                name=condition,
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                fillcolor="rgba(0,0,0,0)",
                line={"color": "rgba(0,0,0,0)"},
                marker={"size": 9},
                hovertemplate="%{y:.4g}<extra>" + condition + "</extra>",
            )
        )
        if described["ci95"] is not None:
            figure.add_trace(
                go.Scatter(
                    x=[condition],
                    y=[described["mean"]],
                    mode="markers",
                    marker={"symbol": "line-ew-open", "size": 30, "color": "#222"},
                    error_y={
                        "type": "data",
                        "array": [described["ci95"][1] - described["mean"]],
                        "arrayminus": [described["mean"] - described["ci95"][0]],
                    },
                    showlegend=False,
                    hovertemplate="mean %{y:.4g}<extra></extra>",
                )
            )
    figure.update_layout(title=f"{name} [{metric['unit']}] per repetition", showlegend=False)
    return _figure_html(figure)


def time_series(result: dict[str, Any], per_second: dict[int, dict[float, float]], name: str, unit: str) -> str:
    """Each trial's per-second series of one metric (all agents combined), against time from the common start,
    with the warm-up and cool-down shaded."""
    timing = result["spec"]["timing"]
    figure = go.Figure()
    for trial in result["trials"]:
        series = per_second.get(trial["idx"], {})
        if not series:
            continue
        xs = sorted(series)
        figure.add_trace(
            go.Scatter(
                x=xs,
                y=[series[x] for x in xs],
                mode="lines",
                name=f"{trial['idx']} {trial['condition']} #{trial['repetition']}",
                legendgroup=trial["condition"],
            )
        )
    warmup, steady = timing["warmup"], timing["steady"]
    if warmup:
        figure.add_vrect(x0=0, x1=warmup, fillcolor=PHASE_COLOURS["warm-up"], line_width=0, annotation_text="warm-up")
    if timing["cooldown"]:
        figure.add_vrect(
            x0=warmup + steady,
            x1=warmup + steady + timing["cooldown"],
            fillcolor=PHASE_COLOURS["cool-down"],
            line_width=0,
            annotation_text="cool-down",
        )
    figure.update_layout(title=f"{name} [{unit}] each second of each trial", xaxis_title="s from the common start")
    return _figure_html(figure)


def _per_second(
    store: Store, run_id: str, result: dict[str, Any], name: str, info: MetricInfo
) -> dict[int, dict[float, float]]:
    """metric `name` (a workload's, `label.field`) per trial and second from the start, combined over agents."""
    label, _, field = name.partition(".")
    starts = {t["idx"]: t["start_at"] for t in result["trials"] if t["start_at"] is not None}
    grouped: dict[int, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for sample in store.samples(run_id):
        if sample["workload"] != label or field not in sample["values"] or sample["trial_idx"] not in starts:
            continue
        second = round(sample["t"] - starts[sample["trial_idx"]])
        grouped[sample["trial_idx"]][second].append(sample["values"][field])
    combine = sum if info.across_agents == "sum" else (lambda v: sum(v) / len(v))
    return {idx: {s: combine(v) for s, v in by_second.items()} for idx, by_second in grouped.items()}


def _provenance(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The test bed as RFC 9411 asks it to be reported: who measured, on what, with which tools, when."""
    environment = result.get("environment") or {}
    controller = environment.get("controller") or {}
    rows = [
        ("run", f"{result['run_id']} ({result['engine']} engine, {result['status']})"),
        ("started", _when(result["created"])),
        ("finished", _when(result["finished"])),
        ("command", " ".join(environment.get("command") or []) or "–"),
        ("vtax", str(result.get("vtax_version") or "–")),
        ("controller", _machine(controller)),
    ]
    for agent, info in sorted((environment.get("agents") or {}).items()):
        rows.append((f"agent {agent}", _machine(info)))
    vsphere = result.get("vsphere") or {}
    for agent, place in sorted((vsphere.get("agents") or {}).items()):
        rows.append((f"VM of {agent}", f"{place.get('vm')} on {place.get('host')} ({place.get('cluster')})"))
    for appliance in vsphere.get("appliances") or []:
        rows.append(("appliance VM", f"{appliance.get('vm')} on {appliance.get('host')} ({appliance.get('power')})"))
    return rows


def _machine(info: dict[str, Any]) -> str:
    if not info:
        return "–"
    return (
        f"{info.get('hostname')} · {info.get('cpu_model')} × {info.get('cores')} · kernel {info.get('kernel')} · "
        f"Python {info.get('python')} · iperf3 {info.get('iperf3') or '–'} · locust {info.get('locust') or '–'}"
    )


def _when(stamp: float | None) -> str:
    return "–" if stamp is None else datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _soak_metrics(soak: SoakResult) -> list[str]:
    """The metrics a soak's timeline shows: the workloads' own and the host's CPU, at most 6."""
    names = [name for name in soak["metrics"] if not name.startswith("host.")]
    return (names + [name for name in ("host.cpu_pct",) if name in soak["metrics"]])[:6]


def _soak_rows(soak: SoakResult) -> list[tuple[str, str, str, str]]:
    """(metric, condition, trend, change points) per row of the soak's table, as the terminal says them."""
    return [
        (name, condition, trend_text(drift["trend"]).plain, steps_text(drift["change_points"]).plain)
        for name, by_condition in soak["metrics"].items()
        for condition, drift in by_condition.items()
    ]


def render(store: Store, study: dict[str, Any], runs: list[dict[str, Any]], catalogue: dict[str, MetricInfo]) -> str:
    """The page of a study (`controller.analysis.analyse_study`): its statistics, and each run's seconds and
    provenance."""
    headline = [name for name in study["metrics"] if name in catalogue and "." in name and not name.startswith("host.")]
    sections = [{"name": name, "plot": distributions(study, name)} for name in study["metrics"]]
    series = []
    for run in runs:
        if run.get("soak"):  # a day of seconds: the soak's timeline of its segments stands in for them
            continue
        for name in headline[: 2 if len(runs) == 1 else 1]:
            per_second = _per_second(store, run["run_id"], run, name, catalogue[name])
            if per_second:
                title = name if len(runs) == 1 else f"{name} · run {run['run_id']}"
                series.append({"name": name, "plot": time_series(run, per_second, title, catalogue[name].unit)})
    return _page(
        "report.html.j2",
        run_meta=study["run_id"],
        result=study,
        runs=runs,
        verdicts=[verdict(name, metric, study["baseline"]) for name, metric in study["metrics"].items()],
        forest=forest_plot(study) if any(m["overhead"] for m in study["metrics"].values()) else "",
        capacity=capacity_plot(study) if study.get("capacity") else "",
        tiles=tiles_plot(study) if study.get("tiles") else "",
        tiles_texts={
            condition: tiles_text(found, study["spec"]["tiles"])
            for condition, found in (study.get("tiles") or {}).items()
        },
        tiles_sentence=tiles_sentence(study) if study.get("tiles") else "",
        soak=soak_plot(study["soak"], _soak_metrics(study["soak"])) if study.get("soak") else "",
        soak_rows=_soak_rows(study["soak"]) if study.get("soak") else [],
        capacity_texts={
            condition: capacity_text(found, study["spec"]["search"])
            for condition, found in (study.get("capacity") or {}).items()
        },
        sections=sections,
        series=series,
        provenance=[(run["run_id"], _provenance(run), yaml.safe_dump(run["spec"], sort_keys=False)) for run in runs],
        zones=[(run["run_id"], run["vsphere"]["zones"]) for run in runs if (run.get("vsphere") or {}).get("zones")],
        result_json=json.dumps({k: study[k] for k in ("run_id", "baseline", "conditions")}),
    )


def render_comparison(comparison: RunComparison) -> str:
    """The page of `vtax compare --html`: the changes plotted and tabled, and the provenance differences."""
    plotted = any(c["change"]["pct"] is not None for c in comparison["changes"])
    return _page(
        "compare.html.j2",
        run_meta=f"{comparison['a']} {comparison['b']}",
        comparison=comparison,
        plot=change_plot(comparison) if plotted else "",
    )


def _page(template: str, **context: object) -> str:
    """A template of this package filled in (autoescaped, every variable required), with plotly inlined."""
    environment = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: importlib.resources.files("controller").joinpath(name).read_text()),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["when"] = _when
    return environment.get_template(template).render(plotly_js=plotly.offline.get_plotlyjs(), **context)
