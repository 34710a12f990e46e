"""The experiment spec: YAML validated by pydantic models, with errors that name the file and the field.

One workload entry model per kind is built from the workload registry, so the controller validates
parameters with exactly the model the agent executes, and `vtax schema` describes every kind.
"""

from __future__ import annotations

import difflib
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

import workloads
from controller.errors import SpecError
from controller.hostcounters import HOST_METRICS

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class Strict(BaseModel):
    """Spec models reject unknown keys: a typo must never be ignored silently."""

    model_config = ConfigDict(extra="forbid")


class AgentSpec(Strict):
    """A place load runs. In the embedded engine, a local child process."""

    name: Name
    address: str = Field("127.0.0.1", description="address its servers listen on and clients reach it by")
    zone: str | None = Field(None, description="security zone, e.g. web or db")


class ConditionSpec(Strict):
    """A state of the system under test, entered and left around every trial by hooks."""

    name: Name
    baseline: bool = Field(False, description="the condition every other is compared with; exactly one")
    description: str | None = None
    setup: list[str] = Field(default_factory=list, description="shell commands run before each trial")
    teardown: list[str] = Field(default_factory=list, description="shell commands run after each trial")
    appliance: Literal["relay"] | None = Field(
        None, description="a built-in reference appliance in the path: 'relay' is vtax's userspace TCP relay"
    )

    @field_validator("setup", "teardown", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class WorkloadEntry(Strict):
    """Common fields of a workload in a spec; `kind` and `params` come from the workload module."""

    name: Name | None = Field(None, description="prefix of its metrics; defaults to the kind")
    agents: list[Name] = Field(min_length=1, description="agents that generate the load (clients)")
    server: Name | None = Field(None, description="agent that runs the server side, for kinds that have one")

    @property
    def label(self) -> str:
        return self.name or self.kind  # type: ignore[attr-defined]


def _entry_model(kind: str) -> type[WorkloadEntry]:
    params_model = workloads.get(kind).Params
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{kind.capitalize()}Workload",
        __base__=WorkloadEntry,
        kind=(Literal[kind], ...),
        params=(params_model, Field(default_factory=params_model)),
    )


WORKLOAD_MODELS = {kind: _entry_model(kind) for kind in workloads.KINDS}
AnyWorkload = Annotated[Union[tuple(WORKLOAD_MODELS.values())], Field(discriminator="kind")]  # noqa: UP007


class Timing(Strict):
    """Phases of every trial, in seconds. KPIs come from the steady phase only."""

    warmup: float = Field(2.0, ge=0, le=3600)
    steady: float = Field(10.0, gt=0, le=7 * 86400)
    cooldown: float = Field(1.0, ge=0, le=3600)
    grace: float = Field(10.0, ge=1, le=3600, description="hard deadline = end of cool-down + grace")
    lead: float = Field(1.0, ge=0.2, le=60, description="time from dispatch to the common start")

    @property
    def duration(self) -> float:
        return self.warmup + self.steady + self.cooldown


class SlaRule(Strict):
    """Thresholds on one metric; a breach makes `vtax run` exit 1."""

    min: float | None = Field(None, description="every condition's mean must be at least this")
    max: float | None = Field(None, description="every condition's mean must be at most this")
    max_change_pct: float | None = Field(
        None, ge=0, description="no condition may differ from the baseline by more than this many %"
    )


class Experiment(Strict):
    """An experiment: who runs what load, under which conditions, how often, in which order."""

    name: Name
    description: str | None = None
    agents: list[AgentSpec] = Field(min_length=1)
    conditions: list[ConditionSpec] = Field(min_length=1)
    workloads: list[AnyWorkload] = Field(min_length=1)  # type: ignore[valid-type]
    timing: Timing = Field(default_factory=Timing)
    repetitions: int = Field(3, ge=1, le=1000)
    order: Literal["interleaved", "blocked", "random"] = Field(
        "interleaved", description="interleaved ABAB..., blocked AA..BB.., random within each repetition"
    )
    seed: int = Field(0, description="seed of the random order")
    hook_timeout: float = Field(120.0, gt=0, description="seconds one hook command may take")
    sla: dict[str, SlaRule] = Field(default_factory=dict, description="thresholds keyed by metric name")

    @property
    def baseline(self) -> ConditionSpec:
        return next(c for c in self.conditions if c.baseline)

    def agent(self, name: str) -> AgentSpec:
        return next(a for a in self.agents if a.name == name)


def metric_names(experiment: Experiment) -> set[str]:
    """Every metric a run of this experiment can report."""
    names = set(HOST_METRICS)
    for entry in experiment.workloads:
        names |= {f"{entry.label}.{field}" for field in workloads.get(entry.kind).METRICS}
    return names


def schema() -> dict[str, Any]:
    """JSON Schema of the spec, for editors."""
    return Experiment.model_json_schema()


def load(path: str | Path) -> Experiment:
    """Read and validate a spec file; any problem raises SpecError naming the file and the field."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(source, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(source, "", f"cannot read: {exc}") from None
    return parse(text, source)


def parse(text: str, source: str = "<spec>") -> Experiment:
    """Validate spec text; `source` names it in errors."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise SpecError(f"{source}{where}", "", f"malformed YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(source, "", f"malformed YAML: {exc}") from None
    if data is None:
        raise SpecError(source, "", "the file is empty; expected an experiment (see `vtax schema`)")
    if not isinstance(data, dict):
        raise SpecError(source, "", f"expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        experiment = Experiment.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(source, exc) from None
    _check_references(source, experiment)
    return experiment


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice instead of keeping the last one silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in WORKLOAD_MODELS or "[" in part:  # discriminator tags and validator names
            continue
        else:
            path += f".{part}" if path else part
    return path


def _spec_error(source: str, exc: ValidationError) -> SpecError:
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "missing":
        reason = "required field is missing"
    elif kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        reason = f"unknown key; {hint}expected one of: {', '.join(allowed)}"
    elif kind == "union_tag_invalid":
        tag = error["input"].get("kind") if isinstance(error["input"], dict) else error["input"]
        reason = f"unknown workload kind {tag!r}; expected one of: {', '.join(WORKLOAD_MODELS)}"
        loc = (*loc, "kind")
    elif kind == "union_tag_not_found":
        reason = f"required field is missing; expected one of: {', '.join(WORKLOAD_MODELS)}"
        loc = (*loc, "kind")
    else:
        reason = f"{error['msg']} (got {error['input']!r})" if "input" in error else error["msg"]
        reason = reason.removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    return SpecError(source, _field_path(loc), reason + (f" (and {more} more problem(s))" if more else ""))


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the model found at `loc`, walking the spec models."""
    model: Any = Experiment
    for part in loc:
        if isinstance(part, str) and part in WORKLOAD_MODELS:
            model = WORKLOAD_MODELS[part]
        elif isinstance(part, str) and isinstance(model, type) and issubclass(model, BaseModel):
            model = _unwrap(model.model_fields[part].annotation) if part in model.model_fields else None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """The model inside list[...], X | None, dict[str, X] or Annotated[...]."""
    while get_origin(annotation) in (list, dict, Union, types.UnionType, Annotated):
        args = [a for a in get_args(annotation) if a is not type(None)]
        annotation = args[-1] if get_origin(annotation) is dict else args[0]
    return annotation


def _check_references(source: str, experiment: Experiment) -> None:
    """Cross-field rules pydantic's per-field validation cannot see."""
    for collection, items in (("agents", experiment.agents), ("conditions", experiment.conditions)):
        _unique(source, collection, [item.name for item in items])
    _unique(source, "workloads", [entry.label for entry in experiment.workloads], key="name")

    baselines = [i for i, c in enumerate(experiment.conditions) if c.baseline]
    if not baselines:
        raise SpecError(source, "conditions", "no condition is marked `baseline: true`; exactly one must be")
    if len(baselines) > 1:
        names = ", ".join(experiment.conditions[i].name for i in baselines)
        raise SpecError(
            source, f"conditions[{baselines[1]}].baseline", f"more than one baseline ({names}); exactly one must be"
        )

    known = [a.name for a in experiment.agents]
    for i, entry in enumerate(experiment.workloads):
        for j, agent in enumerate(entry.agents):
            _known_agent(source, f"workloads[{i}].agents[{j}]", agent, known)
        module = workloads.get(entry.kind)
        external = module.external_target(entry.params)
        if entry.server is not None:
            _known_agent(source, f"workloads[{i}].server", entry.server, known)
            if not module.HAS_SERVER:
                raise SpecError(source, f"workloads[{i}].server", f"a {entry.kind} workload has no server side")
            if external:
                raise SpecError(source, f"workloads[{i}].server", "give either a server agent or params.target")
        elif module.HAS_SERVER and not external:
            raise SpecError(source, f"workloads[{i}].server", f"required: a {entry.kind} workload needs a server agent")

    relayed = [c for c in experiment.conditions if c.appliance == "relay"]
    for i, entry in enumerate(experiment.workloads):
        if relayed and getattr(entry.params, "protocol", "tcp") != "tcp":
            raise SpecError(
                source,
                f"workloads[{i}].params.protocol",
                f"condition {relayed[0].name!r} uses the relay, which forwards TCP only",
            )

    names = metric_names(experiment)
    for metric in experiment.sla:
        if metric not in names:
            close = difflib.get_close_matches(metric, sorted(names), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SpecError(source, f"sla.{metric}", f"unknown metric; {hint}known: {', '.join(sorted(names))}")


def _unique(source: str, collection: str, names: list[str], key: str = "name") -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise SpecError(source, f"{collection}[{i}].{key}", f"{name!r} is used twice; names must be unique")
        seen.add(name)


def _known_agent(source: str, field: str, name: str, known: list[str]) -> None:
    if name not in known:
        raise SpecError(source, field, f"unknown agent {name!r}; defined agents: {', '.join(known)}")
