"""The sweep's answer on its MLflow parent run: mean metric per variant over seeds, best point, counts.

Recomputed from the Optuna study whenever a trial ends, so the MLflow runs table answers "which
variant has the lowest val ppl" on the parent row, without expanding it or grouping children.
A variant here is a point without its seed (``mhmoe-h2``, ``smoe/E=32``): seeds are replicates.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from mhmoe.sweep.queue import PointState
from mhmoe.sweep.status import POINT_STATES
from mhmoe.tracking import names

_NOT_IN_METRIC_NAMES = re.compile(r"[^/\w.\- ]")


@dataclass(frozen=True, kw_only=True)
class ParentSummary:
    metrics: dict[str, float]
    tags: dict[str, str]


def replicate_group(trial: FrozenTrial) -> str:
    """The point's label without its seed coordinate: what the seeds of one variant share."""
    label = str(trial.user_attrs.get("point", trial.number))
    kept = [part for part in label.split("/") if not part.startswith("seed=")]
    return "/".join(kept) or label


def metric_safe(text: str) -> str:
    """``E=32`` -> ``E_32``: MLflow metric names allow only word characters, ``/ . -`` and spaces."""
    return _NOT_IN_METRIC_NAMES.sub("_", text)


def parent_summary(points: list[PointState], metric: str, direction: str = "minimize") -> ParentSummary:
    """Metrics ``mean/<variant>/<metric>``, ``seeds/<variant>``, ``best/<metric>``, ``points/<state>``.

    The mean is over the seeds done so far (one COMPLETE attempt per point); the best point is
    the single best seed run, named by the ``mhmoe.best_point`` tag.
    """
    counts = {state: 0 for state in POINT_STATES}
    values: dict[str, list[float]] = {}
    best: tuple[float, str] | None = None
    for point in points:
        counts[point.state] += 1
        done = [(t, t.value) for t in point.attempts if t.state == TrialState.COMPLETE and t.value is not None]
        if not done or point.attempts[0].user_attrs.get("kind") == names.ROLE_TUNE:  # scored on another set
            continue
        last, value = done[-1]
        values.setdefault(replicate_group(last), []).append(value)
        better = best is None or (value < best[0] if direction == "minimize" else value > best[0])
        if better:
            best = (value, point.label)
    metrics = {names.summary_count(state): float(n) for state, n in counts.items()}
    for group, group_values in values.items():
        metrics[names.summary_mean(metric_safe(group), metric)] = statistics.fmean(group_values)
        metrics[names.summary_seeds(metric_safe(group))] = float(len(group_values))
    tags = {}
    if best is not None:
        metrics[names.summary_best(metric)] = best[0]
        tags[names.TAG_BEST_POINT] = best[1]
    return ParentSummary(metrics=metrics, tags=tags)


def description(spec_description: str, metric: str) -> str:
    """The parent run's MLflow description (Markdown): what the sweep is and where its answer is."""
    return (f"{spec_description.strip()}\n\n" if spec_description.strip() else "") + (
        f"Per variant (a point without its seed): `{names.summary_mean('<variant>', metric)}` is the mean "
        f"over the seeds done, `{names.summary_seeds('<variant>')}` how many; `{names.summary_best(metric)}` "
        f"is the best single run (tag `{names.TAG_BEST_POINT}`); `points/<state>` counts the grid points "
        "done, running, waiting and failed. Updated whenever a trial ends; each child run is one point."
    )


__all__ = ["ParentSummary", "description", "metric_safe", "parent_summary", "replicate_group"]
