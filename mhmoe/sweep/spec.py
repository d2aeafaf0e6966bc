"""Sweep specs: a YAML file that names a base config, variant groups, grid axes and a budget.

A spec describes a set of training runs without running anything::

    name: smoke                        # default: the file stem; names the Optuna study
    base: {preset: debug, config: null, overrides: {train.val_every: 10}}
    match: {policy: flops, baseline: base, mode: match, granularity: 2, expert_multiple: 8}
    budget: {steps: 30}                # or {tokens: N}: max_steps = ceil(N / (batch_size * seq_len))
    validation: {sets: [shakespeare], metric: val/shakespeare/ppl}
    retries: 1                         # re-attempts after a failed or stale attempt
    eval: {tasks: [], limit: null}     # lm-eval tasks run on the final checkpoint (allow_code: false)
    groups:                            # named, non-Cartesian variant rows (default: one group "grid")
      smoe: {model.ffn: smoe}
      mhmoe-h2: {model.ffn: mhmoe, moe.heads: 2}
    grid: {seed: [0, 1], quant.weight_bits: [16, 1.58]}    # Cartesian axes, applied to every group

Trials are groups x grid points. Group and axis keys are dotted RunConfig keys, plus the matching
knobs ``match.mode`` / ``match.granularity`` / ``match.top_k`` / ``match.expert_multiple``. A key a
group sets wins over the same grid axis for that group (e.g. ``smoe: {moe.heads: 1}`` under a
heads axis); points that resolve to the same config run once (:mod:`mhmoe.sweep.plan`).

``match.policy: flops`` sizes every routed point with :func:`mhmoe.sizing.matching.match_variant` against
the SMoE baseline at the same grid coordinates (``baseline: base`` or a group name). There
``moe.num_experts`` / ``moe.expert_d_ff`` / ``moe.top_k`` describe that baseline (in base, the
baseline group or a grid axis) and are derived for the other groups; ``policy: none`` uses every
value as given.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from mhmoe.config.base import ConfigError, _coerce, dotted_from_nested, leaf_fields, unknown_key
from mhmoe.config.presets import PRESETS
from mhmoe.config.run import MAX_STEPS, RunConfig
from mhmoe.sizing.matching import MATCH_MODES
from mhmoe.sweep.shipped_specs import shipped_specs_dir
from mhmoe.sweep.verdict_spec import (
    VerdictSpec,
    check_against_groups,
    parse_compare,
    parse_margin,
    parse_seeds,
    parse_tune,
)

SPEC_KEYS = (
    "name", "description", "base", "match", "budget", "validation", "retries", "eval", "groups", "grid",
    "experiment", "storage", "tracking_uri", "heartbeat", "compare", "seeds", "margin", "tune",
)
MATCH_POLICIES = ("flops", "none")
MATCH_KNOBS: dict[str, Any] = {"match.mode": str, "match.granularity": int, "match.top_k": int,
                               "match.expert_multiple": int}
"""Per-group / per-axis matching knobs (not RunConfig fields)."""
BUDGET_AXES = ("budget.steps", "budget.tokens")
"""Grid axes that put the training length on the grid (a token-budget ladder): each value is a
separate run with its own LR schedule. Not allowed beside a ``budget:`` section."""
BASELINE_SIZING = ("moe.num_experts", "moe.expert_d_ff", "moe.top_k")
"""Under ``policy: flops`` these describe the SMoE baseline; the solver derives them for variants."""
DEFAULT_GROUP = "grid"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
MAX_NAME = 100
"""Characters in a sweep or group name: they end up in MLflow run names, tags and metric keys, and in
folder names; a 500-character name used to kill the worker at its first MLflow call."""
MAX_POINTS_ENV = "MHMOE_SWEEP_MAX_POINTS"
DEFAULT_MAX_POINTS = 5000
"""Grid points a spec may expand to unless ``MHMOE_SWEEP_MAX_POINTS`` raises it: a 20,002-point grid
took minutes to plan and is far past any sweep this harness runs (usually a typo in an axis)."""
EXPERIMENTS_DIR = shipped_specs_dir()
MAX_TOKENS = 10**13
"""Upper bound on budget.tokens (10T): far past any ablation this harness runs; more is a typo."""
GRACE_FACTOR = 3
"""A grace period must cover this many heartbeat intervals: with less, one slow beat (a long
checkpoint write, a busy database) makes a live trial look dead and a second worker trains it too."""
SPEC_NEEDS = "write at least base (preset/config/overrides) and budget (steps or tokens)"


class SpecError(ConfigError):
    """One or more problems with a sweep spec, one line each (key + what is allowed)."""

    def __init__(self, lines: list[str]):
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


Direction = Literal["minimize", "maximize"]
"""Optuna study directions a spec's ``validation.direction`` may name."""

@dataclass(frozen=True, kw_only=True)
class BaseSpec:
    """The config every trial starts from: preset -> config file -> dotted overrides."""

    preset: str | None = None
    """Preset name (``paper-v2``, ``cpu-small``, ``debug``) or None."""
    config_file: Path | None = None
    """YAML RunConfig file, relative paths resolved against the spec's folder."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted RunConfig overrides applied to every trial."""


@dataclass(frozen=True, kw_only=True)
class MatchSpec:
    """How routed variants are sized against the SMoE baseline."""

    policy: str = "flops"
    """flops (derive experts with the matching solver) or none (use values as given)."""
    baseline: str = "base"
    """``base`` (the base config is the SMoE baseline) or the name of a group that is."""
    mode: str = "match"
    """Default :func:`~mhmoe.sizing.matching.match_variant` mode: match, remove (Table 5), rematch (Table 4)."""
    granularity: int = 2
    """Default fine-grained segmentation factor m."""
    expert_multiple: int = 8
    """MH-MoE expert counts are rounded to a multiple of this."""

    def __post_init__(self) -> None:
        if self.policy not in MATCH_POLICIES:
            raise SpecError([f"match.policy={self.policy!r} is not allowed; choose one of {list(MATCH_POLICIES)}"])
        if self.mode not in MATCH_MODES:
            raise SpecError([f"match.mode={self.mode!r} is not allowed; choose one of {list(MATCH_MODES)}"])
        for name in ("granularity", "expert_multiple"):
            if getattr(self, name) < 1:
                raise SpecError([f"match.{name}={getattr(self, name)!r} must be an integer >= 1"])


@dataclass(frozen=True, kw_only=True)
class Group:
    """A named variant row: dotted overrides (and matching knobs) on top of the base."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Axis:
    """One Cartesian grid axis: a dotted key and its values."""

    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A parsed, type-checked sweep spec (:func:`mhmoe.sweep.plan.plan` checks that every point resolves)."""

    name: str
    """Sweep name: the Optuna study name and the ``mhmoe.sweep`` MLflow tag."""
    path: Path | None = None
    """The YAML file it came from."""
    description: str = ""
    base: BaseSpec = field(default_factory=BaseSpec)
    match: MatchSpec = field(default_factory=MatchSpec)
    steps: int | None = None
    """Training steps per trial (sets train.max_steps)."""
    tokens: int | None = None
    """Training tokens per trial (max_steps = ceil(tokens / (batch_size * seq_len)))."""
    val_sets: tuple[str, ...] | None = None
    """data.val_sets for every trial; None keeps the base config's."""
    metric: str | None = None
    """Metric reported to Optuna; None = ``val/<first validation set>/ppl``."""
    direction: Direction = "minimize"
    """Optuna study direction for ``metric``."""
    retries: int = 2
    """Re-attempts of a grid point after a failed or stale attempt (attempts = retries + 1)."""
    eval_tasks: tuple[str, ...] = ()
    """lm-eval tasks run on the final checkpoint (skipped when mhmoe.evaluation is missing)."""
    eval_limit: int | None = None
    """lm-eval ``limit`` (examples per task)."""
    eval_allow_code: bool = False
    """Let the spec's task YAMLs use lm-eval's ``!function`` (runs their Python in every worker)."""
    groups: tuple[Group, ...] = (Group(name=DEFAULT_GROUP),)
    grid: tuple[Axis, ...] = ()
    experiment: str | None = None
    """MLflow experiment; None = the sweep name."""
    storage: str | None = None
    """Optuna storage URL; None = SQLite under the mhmoe home (CLI --storage wins)."""
    tracking_uri: str | None = None
    """MLflow tracking URI; None = MLFLOW_TRACKING_URI or SQLite under the mhmoe home."""
    heartbeat_interval: int = 30
    """Seconds between a running trial's heartbeats."""
    grace_period: int = 180
    """Seconds without a heartbeat after which a running trial is failed and re-queued (the default grows to
    GRACE_FACTOR x a longer ``heartbeat.interval``)."""
    verdict: VerdictSpec = field(default_factory=VerdictSpec)
    """Comparisons, seed schedule, equivalence margin and optional tuning (:mod:`mhmoe.sweep.verdict_spec`)."""

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name

    def group(self, name: str) -> Group:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)


# --------------------------------------------------------------------------------------------
# Parsing


def spec_path(path_or_name: str | Path) -> Path:
    """A path, or the name of a spec shipped in ``experiments/`` (``smoke`` -> experiments/smoke.yaml)."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = EXPERIMENTS_DIR / f"{path_or_name}.yaml"
    if path.suffix == "" and shipped.is_file():
        return shipped
    shipped_names = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
    raise SpecError([f"spec {str(path_or_name)!r} is neither a file nor a shipped spec; shipped: {shipped_names}"])


def load_spec(path_or_name: str | Path) -> SweepSpec:
    """Read and validate a spec; raises :class:`SpecError` listing every problem, one per line.

    Structure and types only: :func:`mhmoe.sweep.plan.plan` resolves (and so checks) its points.
    """
    path, data = read_spec_data(path_or_name)
    return parse_spec(data, path=path)


def read_spec_data(path_or_name: str | Path) -> tuple[Path, dict[str, Any]]:
    """The spec file and its YAML mapping, before validation (:func:`load_spec`)."""
    from mhmoe.config.yaml_strict import read_yaml_file

    path = spec_path(path_or_name)
    try:
        data = read_yaml_file(path, "spec")
    except ConfigError as err:
        raise SpecError([str(err)]) from None
    if data is None or data == {}:
        # An empty file used to queue one trial of the default (paper-size) config.
        raise SpecError([f"spec {str(path)!r} is empty; {SPEC_NEEDS}, e.g. base: {{preset: debug}}, "
                         "budget: {steps: 100}"])
    if not isinstance(data, dict):
        raise SpecError([f"{path}: a sweep spec must be a mapping of {list(SPEC_KEYS)}"])
    return path, data


def parse_spec(data: Mapping[str, Any], *, path: Path | None = None) -> SweepSpec:
    """Build a :class:`SweepSpec` from plain data; collects every structural error."""
    errors: list[str] = []
    for key in data:
        if key not in SPEC_KEYS:
            errors.append(f"unknown spec key {key!r}; valid keys: {list(SPEC_KEYS)}")
    name = _parse_name(data.get("name"), path, errors)
    base = _parse_base(data.get("base", {}), path, errors)
    match = _parse_match(data.get("match", {}), errors)
    steps, tokens = _parse_budget(data.get("budget"), base, errors)
    val_sets, metric, direction = _parse_validation(data.get("validation"), errors)
    retries = _parse_int("retries", data.get("retries", 2), errors, minimum=0)
    eval_tasks, eval_limit, eval_allow_code = _parse_eval(data.get("eval"), errors)
    groups = _parse_groups(data.get("groups"), match, errors)
    grid = _parse_grid(data.get("grid", {}), errors)
    interval, grace = _parse_heartbeat(data.get("heartbeat"), errors)
    experiment = _parse_optional_str("experiment", data.get("experiment"), errors)
    storage = _parse_optional_str("storage", data.get("storage"), errors)
    tracking_uri = _parse_optional_str("tracking_uri", data.get("tracking_uri"), errors)
    verdict = VerdictSpec(compare=parse_compare(data.get("compare"), errors),
                          seeds=parse_seeds(data.get("seeds"), errors),
                          margin=parse_margin(data.get("margin"), errors),
                          tune=parse_tune(data.get("tune"), errors, _key_types(), val_sets))
    check_against_groups(verdict, [g.name for g in groups], [axis.key for axis in grid], errors)
    grid = _with_seed_schedule(grid, verdict, errors)
    _check_size(groups, grid, errors)
    ladder = [axis.key for axis in grid if axis.key in BUDGET_AXES]
    if len(ladder) > 1 or (ladder and (steps is not None or tokens is not None)):
        errors.append(f"grid axes {ladder} and the budget section all set the training length; keep one")
    # The budget (or a budget axis) sets train.max_steps on every point: a max_steps axis or group
    # value would be overwritten, its points merged into one and mislabelled.
    if steps is not None or tokens is not None or ladder:
        where = [f"grid axis {a.key!r}" for a in grid if a.key == "train.max_steps"]
        where += [f"groups.{g.name}" for g in groups if "train.max_steps" in g.overrides]
        if where:
            errors.append(f"{', '.join(where)} and the budget both set train.max_steps; keep one (the budget, "
                          "or a budget.steps / budget.tokens grid axis for several lengths)")
    if match.policy == "flops" and match.baseline != "base" and match.baseline not in {g.name for g in groups}:
        errors.append(f"match.baseline={match.baseline!r} names no group; choose 'base' or one of "
                      f"{[g.name for g in groups]}")
    if errors:
        raise SpecError(errors)
    return SweepSpec(
        name=name, path=path, description=str(data.get("description", "")), base=base, match=match,
        steps=steps, tokens=tokens, val_sets=val_sets, metric=metric, direction=direction, retries=retries,
        eval_tasks=eval_tasks, eval_limit=eval_limit, eval_allow_code=eval_allow_code, groups=groups, grid=grid,
        experiment=experiment,
        storage=storage, tracking_uri=tracking_uri, heartbeat_interval=interval, grace_period=grace, verdict=verdict,
    )


def _with_seed_schedule(grid: tuple[Axis, ...], verdict: VerdictSpec, errors: list[str]) -> tuple[Axis, ...]:
    """A seed schedule starts as the grid axis ``seed: [0, ..., start - 1]``; later seeds are added
    by the scheduler. Tuning seeds must stay out of the comparison's seeds either way."""
    if verdict.seeds is not None and not any(axis.key == "seed" for axis in grid):
        grid = (*grid, Axis(key="seed", values=tuple(range(verdict.seeds.start))))
    seed_axis = next((axis for axis in grid if axis.key == "seed"), None)
    if verdict.tune is not None and verdict.seeds is None and seed_axis is not None:
        clash = sorted(set(verdict.tune.seeds) & set(seed_axis.values))
        if clash:
            errors.append(f"tune.seeds {clash} are also comparison seeds {list(seed_axis.values)}; tuning must "
                          "not share a seed with what it tunes for")
    return grid


def _section(name: str, value: Any, allowed: tuple[str, ...], errors: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(f"{name} must be a mapping with keys {list(allowed)}")
        return {}
    for key in value:
        if key not in allowed:
            errors.append(f"unknown key {name}.{key}; valid keys: {list(allowed)}")
    return value


def _parse_name(value: Any, path: Path | None, errors: list[str]) -> str:
    name = value if value is not None else (path.stem if path else None)
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > MAX_NAME:
        shown = name if not isinstance(name, str) or len(name) <= 40 else f"{name[:40]}... ({len(name)} characters)"
        errors.append(f"name={shown!r} must be 1 to {MAX_NAME} letters, digits, '_', '-' or '.'")
        return "invalid"
    return name


def max_points() -> int:
    """The grid cap: ``MHMOE_SWEEP_MAX_POINTS`` when set (a whole number >= 1), else the default."""
    value = os.environ.get(MAX_POINTS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_POINTS
    if not value.isdigit() or int(value) < 1:
        raise SpecError([f"{MAX_POINTS_ENV}={value!r} must be a whole number >= 1 (the grid cap; "
                         f"default {DEFAULT_MAX_POINTS:,})"])
    return int(value)


def _check_size(groups: tuple[Group, ...], grid: tuple[Axis, ...], errors: list[str]) -> None:
    """Refuse a grid past :func:`max_points` before it is planned (planning it is what takes minutes)."""
    size = len(groups)
    for axis in grid:
        size *= len(axis.values)
    if size > max_points():
        errors.append(f"the grid has {size:,} points (groups x axis values), over the cap of {max_points():,}; "
                      f"shorten an axis, or set {MAX_POINTS_ENV} to raise the cap")


def _parse_int(name: str, value: Any, errors: list[str], *, minimum: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1.0e+4 is a YAML float
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        errors.append(f"{name}={value!r} must be an integer >= {minimum}")
        return minimum
    return value


def _parse_optional_str(name: str, value: Any, errors: list[str]) -> str | None:
    if value is not None and not isinstance(value, str):
        errors.append(f"{name}={value!r} must be a string")
        return None
    return value


def _key_types() -> dict[str, Any]:
    """Declared type of every dotted RunConfig key (and matching knob); grids also take :data:`BUDGET_AXES`."""
    return {**MATCH_KNOBS, **{key: annotation for key, annotation, *_ in leaf_fields(RunConfig)}}


BUDGET_LIMITS = {"budget.steps": (MAX_STEPS, "100x the paper's 100k-step schedule"),
                 "budget.tokens": (MAX_TOKENS, "far past any ablation")}


def _budget_value(where: str, key: str, value: Any, errors: list[str]) -> Any:
    """A training length: a whole number in [1, limit], as an int, a float or ``3e5`` (YAML reads that as text)."""
    limit, why = BUDGET_LIMITS[key]
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number.is_integer() and 1 <= number <= limit):
        errors.append(f"{where}{key}={value!r} must be a whole number from 1 to {limit:.0e} ({why}), e.g. 3e5")
        return value
    return int(number)


def _check_value(where: str, key: str, value: Any, types: dict[str, Any], errors: list[str]) -> Any:
    """Coerce ``value`` to ``key``'s type; one error line naming where, the key and what is allowed."""
    if key in BUDGET_AXES and key in types:
        return _budget_value(f"{where}: ", key, value, errors)
    if key not in types:
        errors.append(f"{where}: {unknown_key(key, types, what='key')}")
        return value
    if key == "match.mode" and value not in MATCH_MODES:
        errors.append(f"{where}: match.mode={value!r} is not allowed; choose one of {list(MATCH_MODES)}")
        return value
    try:
        coerced = _coerce(key, value, types[key])
    except ConfigError as err:
        errors.append(f"{where}: {err}")
        return value
    if key in MATCH_KNOBS and types[key] is int and coerced < 1:
        errors.append(f"{where}: {key}={value!r} must be an integer >= 1")
    return coerced


def _parse_overrides(where: str, value: Any, errors: list[str], *, knobs: bool) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(f"{where} must be a mapping of dotted config keys to values (e.g. moe.heads: 2)")
        return {}
    types = _key_types() if knobs else {k: v for k, v in _key_types().items() if k not in MATCH_KNOBS}
    return {key: _check_value(where, key, v, types, errors) for key, v in dotted_from_nested(value).items()}


def _parse_base(value: Any, path: Path | None, errors: list[str]) -> BaseSpec:
    data = _section("base", value, ("preset", "config", "overrides"), errors)
    preset = data.get("preset")
    if preset is not None and preset not in PRESETS:
        errors.append(f"base.preset={preset!r} is not allowed; choose one of {sorted(PRESETS)}")
    config_file = None
    if data.get("config") is not None:
        config_file = Path(str(data["config"]))
        if not config_file.is_absolute() and path is not None:
            config_file = path.parent / config_file
        if not config_file.is_file():
            errors.append(f"base.config={str(data['config'])!r} does not exist (relative to the spec's folder)")
    overrides = _parse_overrides("base.overrides", data.get("overrides"), errors, knobs=False)
    return BaseSpec(preset=preset, config_file=config_file, overrides=overrides)


def _parse_match(value: Any, errors: list[str]) -> MatchSpec:
    if isinstance(value, str):  # `match: none` / `match: flops`
        value = {"policy": value}
    data = _section("match", value, ("policy", "baseline", "mode", "granularity", "expert_multiple"), errors)
    try:
        return MatchSpec(**{k: v for k, v in data.items() if k in MatchSpec.__dataclass_fields__})
    except SpecError as err:
        errors.extend(err.lines)
    except TypeError as err:
        errors.append(f"match: {err}")
    return MatchSpec()


def _parse_budget(value: Any, base: BaseSpec, errors: list[str]) -> tuple[int | None, int | None]:
    data = _section("budget", value, ("steps", "tokens"), errors)
    steps, tokens = (_budget_value("", f"budget.{name}", data[name], errors) if name in data else None
                     for name in ("steps", "tokens"))
    if steps is not None and tokens is not None:
        errors.append("budget: give steps or tokens, not both")
    if (steps or tokens) and "train.max_steps" in base.overrides:
        errors.append("budget and base.overrides train.max_steps both set the training length; keep one")
    return steps, tokens


def _parse_validation(value: Any, errors: list[str]) -> tuple[tuple[str, ...] | None, str | None, Direction]:
    data = _section("validation", value, ("sets", "metric", "direction"), errors)
    sets = data.get("sets")
    if sets is not None:
        if isinstance(sets, str):
            sets = [sets]
        if not isinstance(sets, list) or not sets or not all(isinstance(s, str) for s in sets):
            errors.append(f"validation.sets={sets!r} must be a non-empty list of set names (see data.val_sets)")
            sets = None
    metric = data.get("metric")
    if metric is not None and (not isinstance(metric, str) or not metric):
        errors.append(f"validation.metric={metric!r} must be a metric name such as val/shakespeare/ppl")
        metric = None
    direction = data.get("direction", "minimize")
    if direction not in get_args(Direction):
        errors.append(f"validation.direction={direction!r} is not allowed; choose one of {list(get_args(Direction))}")
        direction = "minimize"  # reported above; the spec is refused
    return (tuple(sets) if sets else None), metric, direction


def _parse_eval(value: Any, errors: list[str]) -> tuple[tuple[str, ...], int | None, bool]:
    data = _section("eval", value, ("tasks", "limit", "allow_code"), errors)
    tasks = data.get("tasks") or []
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        errors.append(f"eval.tasks={tasks!r} must be a list of lm-eval task names")
        tasks = []
    limit = data.get("limit")
    if limit is not None:
        limit = _parse_int("eval.limit", limit, errors, minimum=1)
    allow_code = data.get("allow_code", False)
    if not isinstance(allow_code, bool):
        errors.append(f"eval.allow_code={allow_code!r} must be true or false")
        allow_code = False
    return tuple(tasks), limit, allow_code


def _parse_groups(value: Any, match: MatchSpec, errors: list[str]) -> tuple[Group, ...]:
    if value is None:
        return (Group(name=DEFAULT_GROUP),)
    if not isinstance(value, dict) or not value:
        errors.append("groups must be a non-empty mapping of group name -> overrides (omit it for one group)")
        return (Group(name=DEFAULT_GROUP),)
    groups = []
    for name, overrides in value.items():
        if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > MAX_NAME:
            errors.append(f"group name {str(name)[:40]!r} must be 1 to {MAX_NAME} letters, digits, '_', '-' or '.'")
            continue
        parsed = _parse_overrides(f"groups.{name}", overrides or {}, errors, knobs=True)
        if match.policy == "flops" and name != match.baseline:
            for key in BASELINE_SIZING:
                if key in parsed and key != "moe.top_k":
                    errors.append(
                        f"groups.{name}: {key} is derived by match.policy=flops; set it on the baseline "
                        f"({match.baseline!r}) or as a grid axis, or use match.policy=none"
                    )
            if "moe.top_k" in parsed:
                errors.append(f"groups.{name}: under match.policy=flops write match.top_k for a variant's top-k "
                              "(moe.top_k describes the baseline)")
        if match.policy == "none":
            for key in parsed:
                if key in MATCH_KNOBS:
                    errors.append(f"groups.{name}: {key} needs match.policy=flops (policy is none)")
        groups.append(Group(name=name, overrides=parsed))
    return tuple(groups)


def _parse_grid(value: Any, errors: list[str]) -> tuple[Axis, ...]:
    if not isinstance(value, dict):
        errors.append("grid must be a mapping of dotted config key -> list of values")
        return ()
    types = {**_key_types(), **dict.fromkeys(BUDGET_AXES, int)}
    axes = []
    for key, values in dotted_from_nested(value).items():
        if not isinstance(values, list):
            errors.append(f"grid axis {key!r} must be a list of values, got {values!r}")
            continue
        if not values:
            errors.append(f"grid axis {key!r} has no values: the grid would be empty")
            continue
        coerced = tuple(_check_value(f"grid axis {key!r}", key, v, types, errors) for v in values)
        if len(set(map(repr, coerced))) != len(coerced):
            errors.append(f"grid axis {key!r} repeats a value: {list(values)}")
        axes.append(Axis(key=key, values=coerced))
    return tuple(axes)


def _parse_heartbeat(value: Any, errors: list[str]) -> tuple[int, int]:
    data = _section("heartbeat", value, ("interval", "grace"), errors)
    # Defaults are SweepSpec's; a longer interval stretches the default grace to GRACE_FACTOR beats.
    interval = _parse_int("heartbeat.interval", data.get("interval", SweepSpec.heartbeat_interval), errors, minimum=1)
    default_grace = max(SweepSpec.grace_period, GRACE_FACTOR * interval)
    grace = _parse_int("heartbeat.grace", data.get("grace", default_grace), errors, minimum=1)
    problem = heartbeat_problem(interval, grace)
    if problem:
        errors.append(problem)
    return interval, grace


def heartbeat_problem(interval: int, grace: int, *, interval_name: str = "heartbeat.interval",
                      grace_name: str = "heartbeat.grace") -> str | None:
    """Why ``grace`` is too short for ``interval`` (None when it is fine); names say where each was set."""
    if grace < GRACE_FACTOR * interval:
        return (f"{grace_name}={grace} must be >= {GRACE_FACTOR * interval} "
                f"({GRACE_FACTOR} x {interval_name}={interval})")
    return None


def steps_for_tokens(tokens: int, batch_size: int, seq_len: int) -> int:
    return max(1, math.ceil(tokens / (batch_size * seq_len)))


__all__ = [
    "Axis",
    "BaseSpec",
    "Group",
    "MatchSpec",
    "SpecError",
    "SweepSpec",
    "heartbeat_problem",
    "load_spec",
    "parse_spec",
    "spec_path",
    "steps_for_tokens",
]
