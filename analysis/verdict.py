"""Who wins: one verdict row per comparison, from a tidy frame of per-seed results.

The input is one row per finished run with columns ``variant`` (a replicate group: a point
without its seed, e.g. ``smoe`` or ``smoe/tokens=1e+06``), ``seed`` and ``value`` (the sweep's
metric). The sweep (from the Optuna study) and the report (from MLflow) both build that frame and
call :func:`verdict_table`, so the terminal, ``sweep status``, the MLflow parent run and the report
print the same numbers. Differences are ``variant − baseline`` paired on shared seeds; for a
perplexity metric they are differences of ``ln ppl`` (nats). Intervals on the difference are the
sequential rule's (:mod:`analysis.sequential`); the interval on each variant's own mean is the
Student-t interval of :mod:`analysis.stats` (descriptive, not a decision).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.frame import METRIC, PARAM, baseline_point, finished, points
from analysis.sequential import ALPHA, METHOD, SeedSchedule, sequential_verdict
from analysis.stats import clip_to_range, seed_stats
from mhmoe.tracking import names

COLUMNS = ["variant", "baseline", "seeds", "mean", "ci_low", "ci_high", "delta", "delta_low", "delta_high",
           "verdict", "bound", "text"]


def is_log_metric(metric: str) -> bool:
    """Perplexities are compared as log ratios (nats), everything else as plain differences."""
    parsed = names.parse_val_metric(metric)
    return parsed is not None and parsed[1] == "ppl"


def unit(metric: str) -> str:
    return " nats" if is_log_metric(metric) else ""


def verdict_text(verdict: str, *, delta: float, low: float, high: float, bound: float, margin: float | None,
                 units: str, n: int, start: int | None) -> str:
    """The verdict in words: ``better (-0.021 nats, 95% [-0.035, -0.007])``, ``unresolved: |Δ| < 0.031 nats``."""
    level = f"{1 - ALPHA:.0%}"
    if verdict in ("better", "worse"):
        return f"{verdict} ({delta:+.3f}{units}, {level} [{low:+.3f}, {high:+.3f}])"
    if verdict == "equivalent":
        return f"equivalent within ±{margin:g}{units} ({level} [{low:+.3f}, {high:+.3f}])"
    if verdict == "unresolved":
        return f"unresolved: |Δ| < {bound:.3f}{units} ({level}, {n} seeds)"
    if verdict == "continue":
        return f"undecided at {n} seeds: |Δ| < {bound:.3f}{units} so far, another seed to come"
    have = f"{n} paired seed{'s' if n != 1 else ''}"
    return f"pending ({have}; the rule reads from {start})" if start else f"no interval ({have})"


def _per_seed(frame: pd.DataFrame, variant: str) -> pd.Series:
    rows = frame[frame["variant"] == variant]
    values = rows.set_index("seed")["value"].astype("float64")
    return values[~values.index.duplicated()].dropna().sort_index()


def verdict_table(frame: pd.DataFrame, pairs: list[tuple[str, str]], *, metric: str,
                  schedule: SeedSchedule | None, margin: float | None = None,
                  direction: str = "minimize") -> pd.DataFrame:
    """One row per (baseline, variant) pair: seeds, the variant's mean and t interval, the paired
    difference with its sequential interval, the verdict and its text.

    ``schedule=None`` (a sweep with fixed seeds) reads the shared seeds once: the rule with
    ``start = max =`` that many seeds, i.e. the Student-t interval of the paired differences.
    """
    log = is_log_metric(metric)
    units = unit(metric)
    rows = []
    for baseline, variant in pairs:
        a, b = _per_seed(frame, variant), _per_seed(frame, baseline)
        own = seed_stats(a.to_numpy())
        shared = a.index.intersection(b.index)
        diffs = (np.log(a[shared]) - np.log(b[shared])) if log else (a[shared] - b[shared])
        n = len(shared)
        rule = schedule if schedule is not None else (SeedSchedule(start=n, max=n) if n >= 2 else None)
        if rule is not None and n >= 1:
            v = sequential_verdict(diffs.to_numpy(), rule, margin=margin, lower_is_better=direction == "minimize")
            verdict, delta, low, high, bound = v.verdict, v.delta, v.ci_low, v.ci_high, v.bound
        else:
            verdict, delta, low, high, bound = "pending", float(diffs.mean()) if n else math.nan, *(math.nan,) * 3
        text = verdict_text(verdict, delta=delta, low=low, high=high, bound=bound, margin=margin, units=units, n=n,
                            start=rule.start if rule is not None else None)
        own_low, own_high = clip_to_range(own.ci_low, own.ci_high, metric)
        rows.append({"variant": variant, "baseline": baseline, "seeds": n, "mean": own.mean, "ci_low": float(own_low),
                     "ci_high": float(own_high), "delta": delta, "delta_low": low, "delta_high": high,
                     "verdict": verdict, "bound": bound, "text": text})
    return pd.DataFrame(rows, columns=COLUMNS)


def winner(table: pd.DataFrame) -> str | None:
    """The variant that every comparison it is in resolves in its favour (None when there is none).

    A baseline wins a comparison its variant resolves ``worse``; an ``equivalent`` or unresolved
    comparison leaves both sides without a win over each other.
    """
    if table.empty:
        return None
    sides = set(table["variant"]) | set(table["baseline"])
    for name in sorted(sides):
        rows = table[(table["variant"] == name) | (table["baseline"] == name)]
        won = [(r["variant"] == name and r["verdict"] == "better")
               or (r["baseline"] == name and r["verdict"] == "worse") for _, r in rows.iterrows()]
        if won and all(won):
            return name
    return None


def headline(table: pd.DataFrame) -> str:
    """One sentence: the winner, else what resolved and what is still open."""
    if table.empty:
        return "No comparison has results yet."
    best = winner(table)
    final = table["verdict"].isin(["better", "worse", "equivalent", "unresolved"])
    resolved = table["verdict"].isin(["better", "worse"])
    lead = f"Winner: {best}." if best else "No variant wins every comparison it is in."
    return (f"{lead} {int(resolved.sum())} of {len(table)} comparison(s) resolved, "
            f"{int((table['verdict'] == 'equivalent').sum())} equivalent, "
            f"{int((final & ~resolved & (table['verdict'] != 'equivalent')).sum())} unresolved, "
            f"{int((~final).sum())} still running.")


def display_frame(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The verdict table as display strings, indexed by variant (Markdown and HTML render it)."""
    units = unit(metric).strip() or "difference"
    extra = [c for c in table.columns if c not in COLUMNS]  # tuned keys: the value each variant trained at
    rows = []
    for _, r in table.iterrows():
        mean = "–" if not np.isfinite(r["mean"]) else f"{r['mean']:.4g}" + (
            f" [{r['ci_low']:.4g}, {r['ci_high']:.4g}]" if np.isfinite(r["ci_low"]) else "")
        delta = "–" if not np.isfinite(r["delta"]) else f"{r['delta']:+.4f}" + (
            f" [{r['delta_low']:+.4f}, {r['delta_high']:+.4f}]" if np.isfinite(r["delta_low"]) else "")
        rows.append({"variant": r["variant"], "baseline": r["baseline"], "seeds": str(r["seeds"]),
                     f"{metric} mean [95% CI]": mean, f"Δ vs baseline ({units}) [sequential 95%]": delta,
                     **{f"{c} (tuned)": _value(r[c]) for c in extra}, "verdict": r["text"]})
    return pd.DataFrame(rows).set_index("variant") if rows else pd.DataFrame()


def markdown(table: pd.DataFrame, metric: str) -> str:
    """The verdict table as Markdown (the MLflow description and the report share it)."""
    from analysis.tables import markdown_table

    shown = display_frame(table, metric)
    return markdown_table(shown) if not shown.empty else "(no comparison yet)\n"


def _value(value) -> str:
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return "–" if value is None else str(value)


def method_note(schedule: SeedSchedule | None, margin: float | None) -> str:
    """How the verdicts were reached, for the table's caption."""
    if schedule is None:
        rule = "fixed seeds read once: the Student-t interval of the paired differences"
    else:
        rule = f"seeds {schedule.start} to {schedule.max}, {METHOD}"
    eq = f"; equivalent = the interval inside ±{margin:g}" if margin is not None else ""
    return f"Paired on shared seeds; {rule}{eq}."




# --------------------------------------------------------------------------------------------
# The report's side: the same table from the MLflow runs frame


def results_from_runs(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The tidy frame :func:`verdict_table` reads, from an annotated runs frame (finished runs)."""
    done = finished(runs)
    column = METRIC + metric
    if column not in done.columns or done.empty:
        return pd.DataFrame(columns=["variant", "seed", "value"])
    return pd.DataFrame({"variant": done["point"], "seed": done["seed"], "value": done[column]}).dropna()


def report_verdict(runs: pd.DataFrame, metric: str, rules: dict | None,
                   direction: str = "minimize") -> tuple[pd.DataFrame, str]:
    """The verdict table of a sweep's runs and its caption.

    ``rules`` is the parent run's rules tag (pairs, seed schedule, margin, tuning); a sweep from
    before it existed compares every point with the baseline point, with its fixed seeds read once.
    Tuned keys become columns holding each variant's trained value (a param of its runs).
    """
    rules = rules or {}
    pts = points(runs)
    if pts.empty:
        return pd.DataFrame(columns=COLUMNS), "No finished runs."
    pair_list = [tuple(p) for p in rules.get("pairs") or []]
    if not pair_list:
        base = baseline_point(pts)
        pair_list = [(base, p) for p in pts["point"] if p != base]
    seeds = rules.get("seeds")
    schedule = SeedSchedule(start=seeds["start"], max=seeds["max"]) if seeds else None
    table = verdict_table(results_from_runs(runs, metric), pair_list, metric=metric, schedule=schedule,
                          margin=rules.get("margin"), direction=direction)
    for key in rules.get("tuned_keys") or []:
        column = PARAM + key
        if column in runs.columns:
            values = finished(runs).drop_duplicates("point").set_index("point")[column]
            table[key] = [values.get(v) for v in table["variant"]]
    note = method_note(schedule, rules.get("margin"))
    if rules.get("tuning"):
        note += f" Tuning: {rules['tuning']}."
    return table, note


__all__ = ["COLUMNS", "display_frame", "headline", "is_log_metric", "markdown", "method_note", "report_verdict",
           "results_from_runs", "unit", "verdict_table", "winner"]
