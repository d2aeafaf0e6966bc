"""Expand a sweep spec into trial points: resolved configs, labels, hashes and budget numbers.

A point is one group at one grid coordinate. Under ``match.policy: flops`` routed points are sized
by :func:`mhmoe.sizing.matching.match_variant` against the SMoE baseline at the same coordinates; dense
points keep ``model.d_ff`` and ignore ``moe.*`` axes. Points that resolve to the same config (same
:meth:`RunConfig.config_hash`) are kept once: the hash is the point's identity in the queue.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

from mhmoe.config import variants
from mhmoe.config.architecture import ModelConfig
from mhmoe.config.base import ConfigError
from mhmoe.config.run import RunConfig, build_run_config, config_base
from mhmoe.sizing import budget
from mhmoe.sizing.matching import match_variant
from mhmoe.sweep.spec import BUDGET_AXES, DEFAULT_GROUP, MATCH_KNOBS, Group, SpecError, SweepSpec, steps_for_tokens
from mhmoe.tracking import names

VARIANT_KEYS = ("model.ffn", "moe.heads", "moe.head_proj", "moe.merge_proj")
"""Keys that define a variant rather than its SMoE baseline (not copied onto the baseline)."""


@dataclass(frozen=True, kw_only=True)
class TrialPoint:
    """One grid point: what a trial trains, and how it compares with its baseline."""

    label: str
    """Human-readable point name, e.g. ``mhmoe-h2/seed=1``; the MLflow run name."""
    group: str
    coords: dict[str, Any]
    """Grid-axis values that apply to this point (axes a group pins are left out)."""
    overrides: dict[str, Any]
    """Dotted overrides over the spec's base that produce ``config`` (matching results included)."""
    config: RunConfig
    config_hash: str
    metric: str
    """Metric reported to Optuna."""
    flops_mismatch_pct: float
    """MoE-layer multiplications per token vs the baseline at the same coordinates."""
    params_mismatch_pct: float
    """MoE-layer expert + head/merge parameters vs the baseline."""
    notes: tuple[str, ...] = ()
    """Matching remarks (rounding) for the plan's warnings."""
    budget: dict[str, int] = field(default_factory=dict)
    """:func:`mhmoe.sizing.budget.summary` of the config (``budget.*`` keys)."""

    @property
    def variant(self) -> str:
        return self.config.variant

    def user_attrs(self) -> dict[str, Any]:
        """What the queue stores with the trial (JSON-serialisable)."""
        return {
            "point": self.label, "group": self.group, "config_hash": self.config_hash,
            "variant": self.variant, "seed": self.config.seed, "metric": self.metric,
            "coords": _jsonable(self.coords), "overrides": _jsonable(self.overrides),
            "config": self.config.to_dict(),
        }


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The expanded grid plus the warnings a user should read before submitting."""

    points: tuple[TrialPoint, ...]
    metric: str
    """The metric every trial reports to Optuna: the spec's ``validation.metric``, else
    :func:`mhmoe.tracking.names.default_metric` of the first point's validation sets."""
    warnings: tuple[str, ...] = ()


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def _fmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return "+".join(_fmt_value(v) for v in value)
    return str(value)


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Last dotted segment unless two axes share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _label(group: str, coords: dict[str, Any], short: dict[str, str]) -> str:
    parts = [] if group == DEFAULT_GROUP and coords else [group]
    parts += [f"{short[k]}={_fmt_value(v)}" for k, v in coords.items()]
    return "/".join(parts)


class _Resolver:
    """Resolves the spec's points over its base: the base once, each distinct override set once.

    The preset and config file are read once per plan (:func:`~mhmoe.config.run.config_base`); a
    point's config and the SMoE baseline it is matched against are each built once from their
    dotted overrides (points at the same coordinates share their baseline), and the matching
    result is applied to the point's validated config instead of resolving it again.
    """

    def __init__(self, spec: SweepSpec):
        self.spec = spec
        self._base: dict[str, Any] | ConfigError | None = None
        self._configs: dict[str, RunConfig | ConfigError] = {}
        self.metric = spec.metric
        """The sweep's metric: the spec's, else the default of the first point (set on first use)."""

    def base(self) -> dict[str, Any]:
        if self._base is None:
            try:
                self._base = config_base(self.spec.base.preset, self.spec.base.config_file)
            except ConfigError as err:  # reported for every point, as any point error is
                self._base = err
        if isinstance(self._base, ConfigError):
            raise self._base
        return self._base

    def ffn(self, overrides: dict[str, Any]) -> str:
        """``model.ffn`` of the config ``overrides`` resolve to, without resolving it."""
        if "model.ffn" in overrides:
            return str(overrides["model.ffn"])
        model = self.base().get("model")
        return str(model.get("ffn", ModelConfig.ffn)) if isinstance(model, dict) else ModelConfig.ffn

    def _config(self, overrides: dict[str, Any]) -> RunConfig:
        key = repr(sorted(overrides.items()))
        if key not in self._configs:
            try:
                self._configs[key] = build_run_config(self.base(), overrides)
            except ConfigError as err:
                self._configs[key] = err
        found = self._configs[key]
        if isinstance(found, ConfigError):
            raise found
        return found

    def budgeted(self, overrides: dict[str, Any]) -> tuple[RunConfig, dict[str, Any]]:
        """The config of ``overrides`` with the training length (the spec's budget, or a budget
        grid axis) and validation sets; and the dotted overrides that produce it."""
        spec = self.spec
        out = {k: v for k, v in overrides.items() if k not in BUDGET_AXES}
        steps = overrides.get("budget.steps", spec.steps)
        tokens = overrides.get("budget.tokens", spec.tokens)
        if spec.val_sets is not None:
            out["data.val_sets"] = spec.val_sets
        if steps is not None and tokens is None:
            out["train.max_steps"] = steps
        cfg = self._config(out)
        if tokens is not None:  # the batch and sequence length decide how many steps that is
            out["train.max_steps"] = steps_for_tokens(tokens, cfg.train.batch_size, cfg.train.seq_len)
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=out["train.max_steps"]))
        return cfg, out

    def baseline(self, coords: dict[str, Any]) -> RunConfig:
        """The SMoE the point is matched against: base (+ baseline group) at the point's coordinates."""
        spec = self.spec
        extra = spec.group(spec.match.baseline).overrides if spec.match.baseline != "base" else {}
        overrides = {**spec.base.overrides, **coords, **extra}
        cfg, _ = self.budgeted({k: v for k, v in overrides.items() if k not in MATCH_KNOBS})
        if cfg.model.ffn != variants.BASELINE or cfg.moe.heads != 1:
            raise ConfigError(
                f"match.baseline={spec.match.baseline!r} resolves to model.ffn={cfg.model.ffn!r}, "
                f"moe.heads={cfg.moe.heads}; the baseline must be an SMoE with moe.heads=1"
            )
        return cfg

    def metric_of(self, cfg: RunConfig) -> str:
        """The sweep's metric, checked against what ``cfg`` logs (the first call fixes the default)."""
        sets = cfg.data.val_names
        if not sets:
            raise ConfigError("data.val_sets is empty: a sweep trial reports a validation metric; "
                              "name at least one set")
        if self.metric is None:
            self.metric = names.default_metric(sets)
        parsed = names.parse_val_metric(self.metric)
        if parsed is None or parsed[0] not in sets:
            # Checked here, not after training: an unknown metric used to fail every trial at the end.
            allowed = [names.val_metric(s, stat) for s in sets for stat in names.VAL_STATS]
            raise ConfigError(f"validation.metric={self.metric!r} is not logged by these trials; "
                              f"choose one of {allowed}")
        return self.metric


def _match(spec: SweepSpec, request: RunConfig, baseline: RunConfig, knobs: dict[str, Any]):
    return match_variant(
        request.model, baseline.moe, ffn=request.model.ffn, heads=request.moe.heads,
        top_k=knobs.get("match.top_k"),
        granularity=knobs.get("match.granularity", spec.match.granularity),
        head_proj=request.moe.head_proj, merge_proj=request.moe.merge_proj,
        mode=knobs.get("match.mode", spec.match.mode),
        expert_multiple=knobs.get("match.expert_multiple", spec.match.expert_multiple),
    )


def _pct(value: int, reference: int) -> float:
    return 100.0 * (value - reference) / reference if reference else 0.0


def _point(resolve: _Resolver, group: Group, coords: dict[str, Any], short: dict[str, str]) -> TrialPoint:
    spec = resolve.spec
    raw = {**spec.base.overrides, **coords, **group.overrides}
    dense = not variants.routes(resolve.ffn(raw))
    if dense:
        # A dense model has no routed layer: moe.* and match.* axes would only duplicate it.
        coords = {k: v for k, v in coords.items() if not k.startswith(("moe.", "match."))}
        raw = {k: v for k, v in raw.items() if not k.startswith(("moe.", "match."))}
    knobs = {k: v for k, v in raw.items() if k in MATCH_KNOBS}
    cfg, overrides = resolve.budgeted({k: v for k, v in raw.items() if k not in MATCH_KNOBS})
    label = _label(group.name, coords, short)
    baseline_coords = {k: v for k, v in coords.items() if k not in VARIANT_KEYS}
    baseline = resolve.baseline(baseline_coords) if spec.match.policy == "flops" else None
    notes: tuple[str, ...] = ()
    if baseline is not None and not dense:
        result = _match(spec, cfg, baseline, knobs)
        moe = result.moe_overrides()
        overrides.update({"model.ffn": result.ffn, **{f"moe.{k}": v for k, v in moe.items()}})
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ffn=result.ffn),
                                  moe=dataclasses.replace(cfg.moe, **moe))
        notes = result.notes
    if baseline is None:
        baseline, _ = resolve.budgeted(dict(spec.base.overrides))
    return TrialPoint(
        label=label, group=group.name, coords=coords, overrides=overrides, config=cfg,
        config_hash=cfg.config_hash(), metric=resolve.metric_of(cfg),
        flops_mismatch_pct=_pct(budget.moe_mults_per_token(cfg.architecture),
                                budget.moe_mults_per_token(baseline.architecture)),
        params_mismatch_pct=_pct(budget.moe_layer_params(cfg.architecture),
                                 budget.moe_layer_params(baseline.architecture)),
        notes=notes,
        budget=budget.summary(cfg.architecture, seq_len=cfg.train.seq_len),
    )


def _group_errors(errors: list[tuple[str, str]]) -> list[str]:
    """One line per distinct problem: ``point A (and 3 more): message``."""
    by_message: dict[str, list[str]] = {}
    for label, message in errors:
        by_message.setdefault(message, []).append(label)
    lines = []
    for message, labels in by_message.items():
        more = f" (and {len(labels) - 1} more)" if len(labels) > 1 else ""
        lines.append(f"point {labels[0]}{more}: {message}")
    return lines


def plan(spec: SweepSpec) -> Plan:
    """Every point of the spec, deduplicated by config hash, with warnings; raises SpecError."""
    keys = [axis.key for axis in spec.grid]
    short = _short_keys(keys)
    errors: list[tuple[str, str]] = []
    warnings: list[str] = []
    notes: dict[str, list[str]] = {}  # matching note -> groups it applies to
    points: dict[str, TrialPoint] = {}
    by_group: list[list[TrialPoint]] = []
    resolve = _Resolver(spec)
    for group in spec.groups:
        by_group.append([])
        pinned = [k for k in keys if k in group.overrides]
        if pinned and len(spec.grid) > 0:
            warnings.append(f"group {group.name!r} pins {pinned}: those axis values do not apply to it")
        free = [axis for axis in spec.grid if axis.key not in group.overrides]
        for combo in itertools.product(*(axis.values for axis in free)):
            coords = dict(zip((axis.key for axis in free), combo))
            try:
                point = _point(resolve, group, coords, short)
            except ConfigError as err:
                errors.append((_label(group.name, coords, short), str(err)))
                continue
            if point.config_hash in points:
                first = points[point.config_hash]
                if first.label != point.label:
                    warnings.append(f"{point.label} resolves to the same config as {first.label}; it runs once")
                continue
            points[point.config_hash] = point
            by_group[-1].append(point)
            for note in point.notes:
                groups = notes.setdefault(note, [])
                if group.name not in groups:
                    groups.append(group.name)
    if errors:
        raise SpecError(_group_errors(errors))
    warnings += [f"{', '.join(groups)}: {note}" for note, groups in notes.items()]
    if not points:
        raise SpecError(["the grid is empty: no group x axis combination produced a trial"])
    return Plan(points=_comparison_major(by_group), metric=str(resolve.metric), warnings=tuple(warnings))


def _comparison_major(by_group: list[list[TrialPoint]]) -> tuple[TrialPoint, ...]:
    """The groups' points taken in turn (each group's first point, then each one's second, ...).

    The queue claims trials in this order, so a sweep stopped part way holds whole paired
    comparisons (every group at the same grid coordinates) instead of every point of the first
    groups and none of the last.
    """
    rows = itertools.zip_longest(*by_group)
    return tuple(point for row in rows for point in row if point is not None)


def data_problems(points: list[TrialPoint] | tuple[TrialPoint, ...]) -> list[str]:
    """One line per corpus/validation/tokenizer path the points name that does not exist here, and per
    tokenizer file that does not load (each distinct file loaded once).

    Not part of :func:`plan`: a spec may be planned on a machine without the data (paper_v2 names
    a cluster path); ``sweep submit``/``run`` refuse these, ``sweep plan`` warns.
    """
    from mhmoe.config.data import DataError
    from mhmoe.data.sources import check_local_paths
    from mhmoe.data.tokenizer import check_tokenizer_file

    def tokenizer_problem(data) -> str | None:  # noqa: ANN001 - DataConfig
        try:
            check_tokenizer_file(data)
        except DataError as err:
            return str(err)
        return None

    problems: dict[str, list[str]] = {}
    tokenizers: dict[str, str | None] = {}  # data.tokenizer -> why it does not load (None: it loads)
    for point in points:
        data = point.config.data
        try:
            check_local_paths(data)
        except DataError as err:
            problems.setdefault(str(err), []).append(point.label)
            continue
        if data.tokenizer not in tokenizers:
            tokenizers[data.tokenizer] = tokenizer_problem(data)
        if tokenizers[data.tokenizer]:
            problems.setdefault(str(tokenizers[data.tokenizer]), []).append(point.label)
    return _group_errors([(labels[0], message) for message, labels in problems.items()])


SPEC_CODE_CONSENT = "set eval.allow_code: true in the spec"


def eval_task_problems(spec: SweepSpec) -> list[str]:
    """One line if ``eval.tasks`` names a task YAML that may run code (or a task file that is missing).

    Without ``eval.allow_code`` every worker would run that code after training; ``sweep
    submit``/``run`` refuse it, like :func:`data_problems`, before anything is created.
    """
    if not spec.eval_tasks:
        return []
    from mhmoe.evaluation.runner import split_tasks
    from mhmoe.evaluation.task_code import task_code_problem
    from mhmoe.evaluation.task_manager import EvalError, user_task_paths

    try:
        paths = user_task_paths(split_tasks(spec.eval_tasks))
    except EvalError as err:
        return [f"eval.tasks: {err}"]
    problem = None if spec.eval_allow_code else task_code_problem(paths, SPEC_CODE_CONSENT)
    return [f"eval.tasks: {problem}"] if problem else []


def expand(spec: SweepSpec) -> list[TrialPoint]:
    """The spec's trial points (validated, deduplicated); raises :class:`SpecError`."""
    return list(plan(spec).points)


__all__ = ["Plan", "TrialPoint", "data_problems", "eval_task_problems", "expand", "plan"]
