"""Ordering check: does our sweep rank the variants the way the paper does (v2 Tables 1-5)?

A small harness cannot match the paper's absolute perplexities, only its orderings. Each
comparison is a pair of paper rows (worse, better); we report our difference
``delta = ln ppl(worse) - ln ppl(better)`` in nats on one validation set (positive = the paper's
order), its 95% CI over seeds (paired when the two points share seeds; the interval rules are
:mod:`analysis.stats`), whether it is resolved (3+ seeds and a CI that excludes zero; otherwise
within noise), whether the CI contains the paper's own delta, and how many seeds would resolve
the paper's delta at the observed seed-to-seed SD of the difference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.frame import MissingData, points, primary_val_set
from analysis.paper_match import FINAL_STEPS, match_points, paper_rows
from analysis.stats import POWER, difference, per_seed, seeds_needed
from mhmoe.tracking import names

PAPER_COLUMN = "RedPajama"  # every delta is computed on this column of the paper's tables
CHAIN_TABLES = ("T1", "T2", "T3")
BASELINE = "SMoE"


def _pair(rows: pd.DataFrame, a: str, b: str) -> dict:
    ra, rb = rows.set_index("row").loc[a], rows.set_index("row").loc[b]
    worse, better = (a, b) if ra[PAPER_COLUMN] >= rb[PAPER_COLUMN] else (b, a)
    pw, pb = rows.set_index("row").loc[worse, PAPER_COLUMN], rows.set_index("row").loc[better, PAPER_COLUMN]
    return {"table": rows["table"].iloc[0], "steps": int(rows["steps"].iloc[0]), "worse": worse, "better": better,
            "paper_worse": pw, "paper_better": pb, "paper_delta": float(np.log(pw / pb))}


def _chain_pairs(rows: pd.DataFrame, *, vs_baseline: bool) -> list[tuple[str, str]]:
    """Adjacent pairs of the paper's ranking, plus every row against the SMoE baseline."""
    ranked = list(rows.sort_values(PAPER_COLUMN, ascending=False)["row"])
    pairs = list(zip(ranked, ranked[1:]))
    if vs_baseline and BASELINE in ranked:
        pairs += [(BASELINE, r) for r in ranked if r != BASELINE]
    seen, unique = set(), []
    for a, b in pairs:
        if frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            unique.append((a, b))
    return unique


def paper_comparisons(steps: int = FINAL_STEPS) -> pd.DataFrame:
    """Every comparison the v2 tables make, with the paper's delta (nats, RedPajama column)."""
    out = []
    for table in CHAIN_TABLES:
        rows = paper_rows(table, steps)
        out += [_pair(rows, a, b) for a, b in _chain_pairs(rows, vs_baseline=True)]
    t4 = paper_rows("T4")
    for _model, group in t4.groupby("model", sort=False):  # head & merge added to each family
        out.append(_pair(t4, *group["row"]))
    t5 = paper_rows("T5")
    out += [_pair(t5, a, b) for a, b in _chain_pairs(t5, vs_baseline=False)]
    return pd.DataFrame(out)


def _verdict(d: dict) -> tuple[bool, bool, str]:
    """(agrees, outside_ci, verdict): the verdict names the direction, plus "within noise" unless resolved."""
    agrees = bool(d["delta"] > 0)
    word = "agrees" if agrees else "disagrees"
    if np.isnan(d["ci_low"]):
        return agrees, False, f"{word}, within noise (no CI)"
    outside = bool(d["ci_low"] > 0 or d["ci_high"] < 0)
    if d["resolved"]:
        return agrees, outside, word
    n = min(d["n_a"], d["n_b"])
    return agrees, outside, f"{word}, within noise" + (f" ({n} seeds)" if outside else "")


def check_ordering(
    runs: pd.DataFrame,
    val_set: str | None = None,
    comparisons: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per paper comparison: our delta (nats), CI, agreement and verdict.

    ``runs`` is an annotated runs frame; ``val_set`` defaults to the paper's RedPajama stand-in
    (:func:`analysis.frame.primary_val_set`). Comparisons whose points are not in the sweep get
    the verdict ``not run``.
    """
    val_set = primary_val_set(runs, val_set)
    metric = names.val_metric(val_set, "ppl")
    comparisons = paper_comparisons() if comparisons is None else comparisons
    pts = points(runs)
    if pts.empty:
        raise MissingData("no finished runs")
    matched = {t: match_points(pts, t).set_index("row") for t in comparisons["table"].unique()}
    rows = []
    for _, c in comparisons.iterrows():
        table = matched[c["table"]]
        pw, pb = table.loc[c["worse"], "point"], table.loc[c["better"], "point"]
        row = {**c.to_dict(), "val_set": val_set, "worse_label": table.loc[c["worse"], "label"],
               "better_label": table.loc[c["better"], "label"]}
        absent = [r for r, p in ((c["worse"], pw), (c["better"], pb)) if pd.isna(p)]
        if absent:
            rows.append({**row, "verdict": "not run: " + ", ".join(absent)})
            continue
        d = difference(per_seed(runs, pw, metric, log=True), per_seed(runs, pb, metric, log=True))
        if np.isnan(d["delta"]):
            rows.append({**row, **d, "verdict": f"no {val_set} values"})
            continue
        agrees, outside, verdict = _verdict(d)
        paper_in_ci = None if np.isnan(d["ci_low"]) else bool(d["ci_low"] <= c["paper_delta"] <= d["ci_high"])
        needed = {"seeds_needed": seeds_needed(d["sd"], c["paper_delta"]),
                  "seeds_needed_power": seeds_needed(d["sd"], c["paper_delta"], power=POWER)}
        rows.append({**row, **d, **needed, "agrees": agrees, "outside_ci": outside, "paper_in_ci": paper_in_ci,
                     "verdict": verdict})
    columns = ["table", "steps", "worse", "better", "paper_delta", "worse_label", "better_label", "val_set",
               "delta", "ci_low", "ci_high", "method", "paired", "n_a", "n_b", "sd", "agrees", "outside_ci",
               "resolved", "paper_in_ci", "seeds_needed", "seeds_needed_power", "verdict", "paper_worse",
               "paper_better"]
    frame = pd.DataFrame(rows)
    for c in columns:
        if c not in frame.columns:
            frame[c] = None
    return frame[columns].rename(columns={"n_a": "n_worse", "n_b": "n_better"})
