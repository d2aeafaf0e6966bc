"""The sweep's verdict, read from its study: printed by ``sweep run``/``status``/``extend`` and logged
on the MLflow parent run (description, a winner tag, one metric per comparison).

The numbers come from :func:`analysis.verdict.verdict_table` over the study's finished comparison
points, so they are the report's numbers too (the report reads the same values from MLflow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.verdict import display_frame, headline, markdown, method_note, unit, verdict_table, winner
from mhmoe.sweep.queue import SweepQueue
from mhmoe.sweep.scheduler import VERDICT_SETTING, chosen_values, pairs, results_frame, seed_schedule, tune_spec
from mhmoe.sweep.summary import metric_safe
from mhmoe.text_table import format_table

NO_WINNER = "none yet"


@dataclass(frozen=True, kw_only=True)
class SweepVerdict:
    table: pd.DataFrame
    metric: str
    note: str
    """How the verdicts were reached (the rule, the seeds, the margin)."""
    tuning: str
    """What tuning chose, one line ("" without tuning)."""
    rules: dict[str, Any]
    """Pairs, seed schedule, margin, tuning line and tuned keys: the parent run's rules tag, for the report."""

    @property
    def winner(self) -> str | None:
        return winner(self.table)

    @property
    def headline(self) -> str:
        return headline(self.table)


def tuning_line(queue: SweepQueue, verdict: dict[str, Any]) -> str:
    tune = tune_spec(verdict)
    if tune is None:
        return ""
    chosen = chosen_values(queue, verdict)
    picks = "; ".join(f"{rep}: " + (", ".join(f"{k}={v:.3g}" for k, v in values.items())
                                    or "the spec's values (every tuning trial failed)")
                      for rep, values in chosen.items())
    waiting = [rep for rep in verdict["templates"] if rep not in chosen]
    return (f"{tune.describe()}; chosen {picks or 'nothing yet'}"
            + (f" (still tuning: {', '.join(waiting)})" if waiting else ""))


def sweep_verdict(queue: SweepQueue) -> SweepVerdict | None:
    """The verdict table of the study's comparisons so far; None for a sweep without pairs."""
    settings = queue.settings()
    verdict = settings.get(VERDICT_SETTING) or {}
    if not verdict.get("pairs") or not settings.get("metric"):
        return None
    metric = settings["metric"]
    schedule = seed_schedule(verdict)
    table = verdict_table(results_frame(queue.point_states()), pairs(verdict), metric=metric, schedule=schedule,
                          margin=verdict.get("margin"), direction=settings.get("direction") or "minimize")
    tune = tune_spec(verdict)
    tuning = tuning_line(queue, verdict)
    rules = {"pairs": verdict["pairs"], "seeds": verdict.get("seeds"), "margin": verdict.get("margin"),
             "tuning": tuning, "tuned_keys": [k.key for k in tune.keys] if tune else []}
    return SweepVerdict(table=table, metric=metric, note=method_note(schedule, verdict.get("margin")),
                        tuning=tuning, rules=rules)


def format_verdict(v: SweepVerdict) -> str:
    """For the terminal: the headline, a fixed-width table (the report's cells), the rule and the tuning line."""
    shown = display_frame(v.table, v.metric).reset_index()
    rows = [{c: str(r[c]) for c in shown.columns} for _, r in shown.iterrows()]
    scale = ", in ln ppl: nats" if unit(v.metric) else ""
    lines = [f"verdict on {v.metric} (delta = variant - baseline{scale}): {v.headline}",
             format_table(rows, list(shown.columns)), v.note]
    return "\n".join(lines + ([f"tuning: {v.tuning}"] if v.tuning else []))


MAX_DESCRIPTION_TABLE = 5000
"""Characters of the verdict table in the MLflow description (a tag: MLflow caps it at 8000)."""


def format_verdict_markdown(v: SweepVerdict) -> str:
    """For the MLflow description: the same content as Markdown (a long table is cut, the report has it all)."""
    table = markdown(v.table, v.metric)
    if len(table) > MAX_DESCRIPTION_TABLE:
        table = table[: table.rfind("\n", 0, MAX_DESCRIPTION_TABLE)] + "\n\n(table cut here; the report has every row)"
    return "\n\n".join([f"**{v.headline}**", table, v.note] + ([f"Tuning: {v.tuning}."] if v.tuning else []))


def parent_metrics(v: SweepVerdict) -> dict[str, float]:
    """``verdict/<variant>_vs_<baseline>/{delta,low,high,seeds}`` for the MLflow runs table and charts."""
    out: dict[str, float] = {}
    for _, r in v.table.iterrows():
        key = metric_safe(f"verdict/{r['variant']}_vs_{r['baseline']}")
        for name, column in (("delta", "delta"), ("low", "delta_low"), ("high", "delta_high"), ("seeds", "seeds")):
            if np.isfinite(float(r[column])):
                out[f"{key}/{name}"] = float(r[column])
    return out


__all__ = ["NO_WINNER", "SweepVerdict", "format_verdict", "format_verdict_markdown", "parent_metrics",
           "sweep_verdict", "tuning_line"]
