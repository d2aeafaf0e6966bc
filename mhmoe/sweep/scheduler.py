"""What the queue should train next: tuning trials, then comparison seeds until the verdicts settle.

A sweep with a ``tune`` section, a ``seeds`` schedule or ``compare`` pairs
(:mod:`mhmoe.sweep.verdict_spec`) stores, at submit, one *template* per replicate (a point
without its seed: ``smoe``, ``smoe/tokens=1e+06``) and the comparison pairs between replicates.
:func:`schedule` reads the study and enqueues what follows from it, as ordinary queue points
(claimed, heart-beaten, retried and resumed like any other; identity = config hash, so running
it twice, or from two workers, adds nothing twice):

1. **Tuning** (per replicate): an Optuna study ``<sweep>.tune.<replicate>`` with a TPE sampler
   (seeded) proposes values, or takes the grid's points in order; each proposal becomes one queue
   point per tuning seed, trained for ``budget`` x the steps on the training corpus minus the
   held-out documents and scored on them (``val/holdout/...``), never on a reported set. When its
   points finish, the mean is told to the tuning study; optuna-dashboard shows those studies.
2. **Comparison seeds**: once a replicate's tuning ends (or at once without tuning) its first
   seeds are queued with the best values found (they are in its config, so MLflow logs them).
3. **More seeds**: after every look at a pair whose points all finished, the sequential rule
   (:mod:`analysis.sequential`) says ``continue`` or decides; ``continue`` queues the lowest seed
   one of the two sides lacks, up to the schedule's ``max``.

Workers call :func:`schedule` after every trial and before giving up on an empty queue;
``sweep submit`` / ``run`` / ``extend`` call it once. The whole pass runs under the queue lock.
"""

from __future__ import annotations

import itertools
import math
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from analysis.frame import strip_seed
from analysis.sequential import SeedSchedule
from analysis.verdict import verdict_table
from mhmoe.config import variants
from mhmoe.sweep.queue import PointState, SweepQueue
from mhmoe.sweep.verdict_spec import TUNE_SET, TuneSpec
from mhmoe.tracking import names

VERDICT_SETTING = "verdict"
"""Key of the sweep settings (a study user attr) that holds templates, pairs and the rules."""
KIND_TUNE = names.ROLE_TUNE
TUNE_PREFIX = "tune/"
"""Label prefix of tuning points (``tune/smoe/trial=3/seed=100``)."""


@dataclass(frozen=True, kw_only=True)
class DerivedPoint:
    """A point built from a template; quacks like :class:`mhmoe.sweep.plan.TrialPoint` for the queue."""

    label: str
    config_hash: str
    attrs: dict[str, Any]

    def user_attrs(self) -> dict[str, Any]:
        return self.attrs


# --------------------------------------------------------------------------------------------
# Settings written at submit


def replicate(label: str) -> str:
    return strip_seed(label)


def _baseline_group(spec, points) -> str:
    """The group the others are compared with by default: the matching baseline, else the first SMoE."""
    names_ = [g.name for g in spec.groups]
    if spec.match.baseline in names_:
        return spec.match.baseline
    for point in points:
        if point.config.model.ffn == variants.BASELINE and point.config.moe.heads == 1:
            return point.group
    return names_[0]


def group_pairs(spec, points) -> list[tuple[str, str]]:
    """The spec's ``compare`` pairs, else every group against the SMoE baseline group."""
    if spec.verdict.compare:
        return list(spec.verdict.compare)
    base = _baseline_group(spec, points)
    return [(base, g.name) for g in spec.groups if g.name != base]


def _cell(point) -> dict[str, Any]:
    return {k: v for k, v in point.coords.items() if k != "seed"}


def replicate_pairs(spec, points) -> list[tuple[str, str]]:
    """Group pairs at every grid cell: replicates whose non-seed coordinates agree where both have them."""
    by_group: dict[str, dict[str, Any]] = {}
    for point in points:
        by_group.setdefault(point.group, {}).setdefault(replicate(point.label), _cell(point))
    out = []
    for a, b in group_pairs(spec, points):
        for rep_a, cell_a in by_group.get(a, {}).items():
            for rep_b, cell_b in by_group.get(b, {}).items():
                shared = set(cell_a) & set(cell_b)
                if all(cell_a[k] == cell_b[k] for k in shared) and (rep_a, rep_b) not in out:
                    out.append((rep_a, rep_b))
    return out


def verdict_settings(spec, points) -> dict[str, Any]:
    """Templates (the first point of each replicate), initial seeds, pairs and rules, for the study."""
    templates: dict[str, dict[str, Any]] = {}
    seeds: dict[str, list[int]] = {}
    for point in points:
        rep = replicate(point.label)
        templates.setdefault(rep, point.user_attrs())
        seeds.setdefault(rep, []).append(int(point.config.seed))
    v = spec.verdict
    return {
        "templates": templates, "initial_seeds": seeds, "pairs": [list(p) for p in replicate_pairs(spec, points)],
        "seeds": {"start": v.seeds.start, "max": v.seeds.max} if v.seeds else None, "margin": v.margin,
        "tune": v.tune.to_dict() if v.tune else None,
    }


def describe_plan(spec, points) -> list[str]:
    """What the plan's table does not show: comparisons, the seed schedule, tuning and the trial bounds."""
    v = spec.verdict
    reps = {replicate(p.label) for p in points}
    rep_pairs = replicate_pairs(spec, points)
    lines = ["comparisons (baseline -> variant, paired on seeds): "
             + (", ".join(f"{a} -> {b}" for a, b in rep_pairs) or "none")]
    most = len(points)
    if v.seeds is not None:
        compared = {r for pair in rep_pairs for r in pair}
        most = len(points) + len(compared) * (v.seeds.max - v.seeds.start)
        lines.append(f"seeds: {v.seeds.start} per point, then one more for both sides of a comparison while it is "
                     f"undecided, up to {v.seeds.max} (sequential rule, docs/VERDICTS.md)"
                     + (f"; equivalence margin +-{v.margin:g}" if v.margin is not None else ""))
    if v.tune is not None:
        tuning = len(reps) * v.tune.effective_trials * len(v.tune.seeds)
        lines.append(f"tuning: {v.tune.describe()}; {tuning} tuning trials first, and the comparison points "
                     "above train at each replicate's chosen values")
        most += tuning
    if most != len(points):
        lines.append(f"trials: {len(points)} listed above now, at most {most} in all")
    return lines


def seed_schedule(verdict: dict[str, Any]) -> SeedSchedule | None:
    seeds = verdict.get("seeds")
    return SeedSchedule(start=seeds["start"], max=seeds["max"]) if seeds else None


def tune_spec(verdict: dict[str, Any]) -> TuneSpec | None:
    return TuneSpec.from_dict(verdict["tune"]) if verdict.get("tune") else None


# --------------------------------------------------------------------------------------------
# Deriving points from templates


def _steps_fraction(steps: int, fraction: float) -> int:
    return max(1, math.ceil(steps * fraction))


def derive(template: dict[str, Any], *, seed: int, values: dict[str, Any], tune: TuneSpec | None = None,
           label: str | None = None, extra: dict[str, Any] | None = None) -> DerivedPoint:
    """The template's point at ``seed`` with ``values`` (tuned keys) applied.

    With ``tune`` it is a tuning point: ``budget`` x the steps (warmup scaled alike, so the LR
    schedule keeps its shape), scored only on the held-out documents.
    """
    from mhmoe.config.run import build_run_config

    config = template["config"]
    overrides: dict[str, Any] = {"seed": seed, **values}
    metric = template["metric"]
    if tune is not None:
        overrides.update({
            "train.max_steps": _steps_fraction(config["train"]["max_steps"], tune.budget),
            "optim.warmup_steps": math.ceil(config["optim"]["warmup_steps"] * tune.budget),
            "data.val_sets": (TUNE_SET,), "data.holdout_fraction": tune.holdout,
        })
        stat = (names.parse_val_metric(metric) or ("", "ppl"))[1]
        metric = names.val_metric(TUNE_SET, stat)
    cfg = build_run_config(config, overrides)
    rep = replicate(template["point"])
    label = label or f"{rep}/seed={seed}"
    attrs = {
        **{k: v for k, v in template.items() if k not in ("attempt", "max_attempt", "mlflow_run_id")},
        "point": label, "seed": seed, "config": cfg.to_dict(), "config_hash": cfg.config_hash(), "metric": metric,
        "coords": {**template.get("coords", {}), "seed": seed},
        "overrides": {**template.get("overrides", {}), **{k: list(v) if isinstance(v, tuple) else v
                                                         for k, v in overrides.items()}},
        **({"tuned": values} if values and tune is None else {}), **(extra or {}),
    }
    return DerivedPoint(label=label, config_hash=attrs["config_hash"], attrs=attrs)


# --------------------------------------------------------------------------------------------
# Reading the study


def last_value(point: PointState) -> float | None:
    done = [t.value for t in point.attempts if t.state == TrialState.COMPLETE and t.value is not None]
    return float(done[-1]) if done else None


def comparison_points(points: list[PointState]) -> dict[str, dict[int, PointState]]:
    """Replicate -> seed -> point, tuning points left out."""
    out: dict[str, dict[int, PointState]] = {}
    for point in points:
        attrs = point.attempts[0].user_attrs
        if attrs.get("kind") == KIND_TUNE or "seed" not in attrs:
            continue
        out.setdefault(replicate(point.label), {})[int(attrs["seed"])] = point
    return out


def results_frame(points: list[PointState]) -> pd.DataFrame:
    """The tidy frame :func:`analysis.verdict.verdict_table` reads: variant (replicate), seed, value."""
    rows = [{"variant": rep, "seed": seed, "value": value}
            for rep, seeds in comparison_points(points).items() for seed, p in seeds.items()
            if (value := last_value(p)) is not None]
    return pd.DataFrame(rows, columns=["variant", "seed", "value"])


def pairs(verdict: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a, b) for a, b in verdict.get("pairs", [])]


# --------------------------------------------------------------------------------------------
# Tuning


def tune_study_name(sweep: str, rep: str) -> str:
    return f"{sweep}.tune.{rep}"


def _sampler(tune: TuneSpec, name: str, asked: int = 0) -> optuna.samplers.BaseSampler:
    # Stable across processes (every worker rebuilds the same sampler), and moved on by the trials
    # asked so far: a fresh sampler with the first seed would propose the first random point again.
    seed = (zlib.crc32(name.encode()) + asked) % 2**32
    if tune.sampler == "grid":
        # The grid's points are enqueued in the study (:func:`open_tune_study`), so every ask takes
        # the next one. Optuna's GridSampler is not used: it stops the study (an error outside
        # Study.optimize) once the grid is exhausted, and re-runs points under concurrent workers.
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, tune.trials // 2)))


def _distributions(tune: TuneSpec, key_types: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in tune.keys:
        low = min(k.values) if k.values else float(k.low or 0)
        high = max(k.values) if k.values else float(k.high or 0)
        if key_types.get(k.key) is int:
            out[k.key] = IntDistribution(int(low), int(high), log=k.log)
        else:
            out[k.key] = FloatDistribution(float(low), float(high), log=k.log)
    return out


def _grid(tune: TuneSpec) -> list[dict[str, Any]]:
    combos = itertools.product(*(k.values for k in tune.keys))
    return [dict(zip((k.key for k in tune.keys), combo)) for combo in combos][: tune.effective_trials]


def open_tune_study(queue: SweepQueue, rep: str, tune: TuneSpec) -> optuna.Study:
    """The replicate's tuning study (created on first use; a grid's points enqueued then)."""
    name = tune_study_name(queue.study_name, rep)
    study = optuna.create_study(study_name=name, storage=queue.storage, direction="minimize",
                                sampler=_sampler(tune, name), load_if_exists=True)
    trials = study.get_trials(deepcopy=False)
    if tune.sampler == "grid" and not trials:
        for params in _grid(tune):
            study.enqueue_trial(params)
    study.sampler = _sampler(tune, name, len(_asked(trials)))
    return study


def _asked(trials: list) -> list:
    return [t for t in trials if t.state != TrialState.WAITING]


def _tune_points(template: dict[str, Any], params: dict[str, Any], number: int, tune: TuneSpec,
                 study_name: str) -> list[DerivedPoint]:
    rep = replicate(template["point"])
    extra = {"kind": KIND_TUNE, "tune_study": study_name, "tune_trial": number}
    return [derive(template, seed=s, values=dict(params), tune=tune, extra=extra,
                   label=f"{TUNE_PREFIX}{rep}/trial={number}/seed={s}") for s in tune.seeds]


def _tune_step(queue: SweepQueue, rep: str, template: dict[str, Any], tune: TuneSpec,
               states: dict[str, PointState], new: list[DerivedPoint]) -> dict[str, Any] | None:
    """Advance one replicate's tuning; the chosen values once every trial is told, else None."""
    from mhmoe.sweep.spec import _key_types

    study = open_tune_study(queue, rep, tune)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        points = _tune_points(template, trial.params, trial.number, tune, study.study_name)
        found = [states.get(p.config_hash) for p in points]
        if any(s is None for s in found):
            new.extend(p for p, s in zip(points, found) if s is None)  # asked, then crashed before enqueueing
        elif all(s.state == "done" for s in found if s is not None):
            values = [last_value(s) for s in found if s is not None]
            study.tell(trial.number, sum(v for v in values if v is not None) / len(values))
        elif any(s.state == "failed" for s in found if s is not None):
            study.tell(trial.number, state=TrialState.FAIL)
    trials = _asked(study.get_trials(deepcopy=False))
    running = sum(t.state == TrialState.RUNNING for t in trials)
    distributions = _distributions(tune, _key_types())
    while len(trials) < tune.effective_trials and running < tune.parallel:
        with warnings.catch_warnings():  # "heartbeat is meant for Study.optimize": the queue beats, not this study
            warnings.simplefilter("ignore", UserWarning)
            asked = study.ask(distributions)
        new.extend(_tune_points(template, asked.params, asked.number, tune, study.study_name))
        trials = _asked(study.get_trials(deepcopy=False))
        running += 1
    return _chosen(trials, tune)


def _chosen(trials: list, tune: TuneSpec) -> dict[str, Any] | None:
    """The best told trial's values once every trial is asked and told (``{}`` when all failed: the
    comparison then trains at the spec's values); None while tuning goes on."""
    asked = _asked(trials)
    if len(asked) < tune.effective_trials or any(t.state == TrialState.RUNNING for t in asked):
        return None
    complete = [t for t in asked if t.state == TrialState.COMPLETE]
    return dict(min(complete, key=lambda t: (t.value, t.number)).params) if complete else {}


def chosen_values(queue: SweepQueue, verdict: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Replicate -> tuned values (finished tunings only), for tables; touches no sampler."""
    tune = tune_spec(verdict)
    out: dict[str, dict[str, Any]] = {}
    if tune is None:
        return out
    for rep in verdict["templates"]:
        name = tune_study_name(queue.study_name, rep)
        try:
            study = optuna.load_study(study_name=name, storage=queue.storage)
        except KeyError:
            continue
        chosen = _chosen(study.get_trials(deepcopy=False), tune)
        if chosen is not None:
            out[rep] = chosen
    return out


# --------------------------------------------------------------------------------------------
# Seeds until resolved


def _next_seed(sides: tuple[dict[int, PointState], dict[int, PointState]], table_row: pd.Series,
               schedule: SeedSchedule) -> int | None:
    if table_row["verdict"] != "continue":
        return None
    for s in range(schedule.max):
        if s not in sides[0] or s not in sides[1]:
            return s
    return None


def _more_seeds(verdict: dict[str, Any], metric: str, direction: str, points: list[PointState],
                ready: dict[str, dict[str, Any]]) -> list[DerivedPoint]:
    schedule = seed_schedule(verdict)
    if schedule is None:
        return []
    by_rep = comparison_points(points)
    frame = results_frame(points)
    new: list[DerivedPoint] = []
    for base, variant in pairs(verdict):
        if base not in ready or variant not in ready:
            continue
        sides = (by_rep.get(base, {}), by_rep.get(variant, {}))
        if any(p.state in ("waiting", "running") for side in sides for p in side.values()):
            continue  # look only at complete data: the rule's looks are whole seeds of both sides
        row = verdict_table(frame, [(base, variant)], metric=metric, schedule=schedule,
                            margin=verdict.get("margin"), direction=direction).iloc[0]
        seed = _next_seed(sides, row, schedule)
        if seed is None:
            continue
        for rep, side in zip((base, variant), sides):
            if seed not in side:
                new.append(derive(verdict["templates"][rep], seed=seed, values=ready[rep]))
    return new


# --------------------------------------------------------------------------------------------
# The pass


def schedule(queue: SweepQueue) -> list[str]:
    """Enqueue what the study's results call for next; returns the labels added (idempotent)."""
    settings = queue.settings()
    verdict = settings.get(VERDICT_SETTING)
    if not verdict:
        return []
    tune = tune_spec(verdict)
    with queue.lock():
        points = queue.point_states()
        states = {p.config_hash: p for p in points}
        new: list[DerivedPoint] = []
        ready: dict[str, dict[str, Any]] = {}
        for rep, template in verdict["templates"].items():
            values = _tune_step(queue, rep, template, tune, states, new) if tune else {}
            if values is None:
                continue
            ready[rep] = values
            if tune:
                new += [derive(template, seed=s, values=values) for s in verdict["initial_seeds"][rep]]
        new += _more_seeds(verdict, settings.get("metric") or "", settings.get("direction") or "minimize", points,
                           ready)
        if not new:
            return []
        result = queue.submit_unlocked(new, retries=int(settings.get("retries", 2)))
    return list(result.added)


__all__ = ["KIND_TUNE", "TUNE_PREFIX", "VERDICT_SETTING", "DerivedPoint", "chosen_values", "comparison_points",
           "derive", "open_tune_study", "pairs", "replicate", "results_frame", "schedule", "seed_schedule",
           "tune_spec", "tune_study_name", "verdict_settings"]
