"""The sweep's answer on its MLflow parent run: mean metric per variant over seeds, best point, counts.

Recomputed from the Optuna study whenever a trial ends. The per-variant means are a table (the run's
description and the ``summary/variants.json`` table artifact), not metrics: as metrics they were one
curve per variant over "trials finished", filling the top of MLflow's chart view. The best value and
the point counts stay metrics, so the runs table shows them on the parent row. A variant here is a
point without its seed (``mhmoe-h2``, ``smoe/E=32``): seeds are replicates.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from mhmoe.sweep.queue import PointState
from mhmoe.sweep.status import POINT_STATES
from mhmoe.tracking import names

_NOT_IN_METRIC_NAMES = re.compile(r"[^/\w.\- ]")


VARIANTS_TABLE = "summary/variants.json"
"""The parent run's table artifact: one row per variant (``variant``, ``seeds``, ``mean``)."""


@dataclass(frozen=True, kw_only=True)
class ParentSummary:
    metrics: dict[str, float]
    tags: dict[str, str]
    variants: list[dict[str, Any]]
    """One row per variant with a finished seed: variant, seeds, mean (of the sweep's metric)."""

    def markdown(self, metric: str) -> str:
        """The variants as a Markdown table (for the run's description); empty before any finished seed."""
        if not self.variants:
            return ""
        rows = [f"| variant | seeds | mean {metric} |", "|---|---:|---:|"]
        rows += [f"| {r['variant']} | {r['seeds']} | {r['mean']:.4g} |" for r in self.variants]
        return "\n".join(rows)


def replicate_group(trial: FrozenTrial) -> str:
    """The point's label without its seed coordinate: what the seeds of one variant share."""
    label = str(trial.user_attrs.get("point", trial.number))
    kept = [part for part in label.split("/") if not part.startswith("seed=")]
    return "/".join(kept) or label


def metric_safe(text: str) -> str:
    """``E=32`` -> ``E_32``: MLflow metric names allow only word characters, ``/ . -`` and spaces."""
    return _NOT_IN_METRIC_NAMES.sub("_", text)


def parent_summary(points: list[PointState], metric: str, direction: str = "minimize") -> ParentSummary:
    """Per-variant means over the seeds done so far (one COMPLETE attempt per point), metrics
    ``best/<metric>`` (the single best seed run, named by the ``mhmoe.best_point`` tag) and ``points/<state>``.
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
    variants: list[dict[str, Any]] = [{"variant": group, "seeds": len(group_values),
                                          "mean": statistics.fmean(group_values)}
                                         for group, group_values in values.items()]
    tags = {}
    if best is not None:
        metrics[names.summary_best(metric)] = best[0]
        tags[names.TAG_BEST_POINT] = best[1]
    return ParentSummary(metrics=metrics, tags=tags, variants=variants)


def description(spec_description: str, metric: str, variants: str = "") -> str:
    """The parent run's MLflow description (Markdown): what the sweep is and where its answer is."""
    return (f"{spec_description.strip()}\n\n" if spec_description.strip() else "") + (
        (f"{variants}\n\n" if variants else "")
        + f"Per variant (a point without its seed): the mean of `{metric}` over the seeds done (the table above "
        f"and the `{VARIANTS_TABLE}` artifact); `{names.summary_best(metric)}` is the best single run (tag "
        f"`{names.TAG_BEST_POINT}`); `points/<state>` counts the grid points done, running, waiting and failed. "
        "Updated whenever a trial ends; each child run is one point."
    )


__all__ = ["VARIANTS_TABLE", "ParentSummary", "description", "metric_safe", "parent_summary", "replicate_group"]
