"""Token-budget ladder: how each variant's difference to the baseline moves with training tokens.

A sweep whose grid puts the budget on an axis (``budget.tokens: [3e5, 1e6, 3e6]``) trains every
variant at several budgets. At each rung the difference to the baseline (SMoE) is paired by seed:
``delta = ln ppl(baseline) - ln ppl(variant)`` in nats, positive when the variant is better, with
the interval rules of :mod:`analysis.stats`. With three or more rungs a straight line in
log10(tokens) is fitted to the per-seed differences (ordinary least squares) and, where its slope
is resolved, the budget at which the line crosses zero is reported with a delta-method interval.
That crossover is an extrapolation of a trend fitted on a few budgets, and is labelled as one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator
from scipy import stats as sps

from analysis.frame import BASELINE_VARIANT, MissingData, annotate, finished
from analysis.stats import CONFIDENCE, difference, interval_text, per_seed
from analysis.style import SINGLE, figure, line_styles, paper_name, paper_sort_key, styled
from mhmoe.config.architecture import is_quantized
from mhmoe.tracking import names

MIN_RUNGS_FOR_TREND = 3
STYLE_COLUMNS = ("family", "heads", "weight_bits", "head_proj", "merge_proj", "shared")
"""Point columns kept on each delta row, so the ladder figure styles variants as every other figure does."""


def rungs(runs: pd.DataFrame) -> list[float]:
    """The distinct training-token budgets of the finished runs, smallest first."""
    if "tokens" not in runs.columns:
        return []
    return sorted(finished(runs)["tokens"].dropna().unique().tolist())


def at_rung(runs: pd.DataFrame, tokens: float) -> pd.DataFrame:
    """The runs of one budget, re-annotated so labels no longer tell rungs apart (no ``max_steps=`` suffix)."""
    return annotate(runs[runs["tokens"] == tokens])


def _baseline_at(done: pd.DataFrame) -> str | None:
    base = done[(done["variant"] == BASELINE_VARIANT) & ~is_quantized(done["weight_bits"])]
    return str(base["point"].iloc[0]) if len(base) else None


def ladder_deltas(runs: pd.DataFrame, val_set: str) -> pd.DataFrame:
    """One row per (rung, variant): paired delta vs the rung's SMoE, its interval, n and per-seed values."""
    metric = names.val_metric(val_set, "ppl")
    rows = []
    for tokens in rungs(runs):
        rung = at_rung(finished(runs), tokens)
        base = _baseline_at(rung)
        if base is None:
            continue
        b = per_seed(rung, base, metric, log=True)
        for _, point in rung.drop_duplicates("point").iterrows():
            if point["point"] == base:
                continue
            v = per_seed(rung, point["point"], metric, log=True)
            shared = b.index.intersection(v.index)
            d = difference(b, v)
            rows.append({"tokens": tokens, "label": point["variant"], "name": paper_name(point),
                         "order": paper_sort_key(point), **{k: point[k] for k in STYLE_COLUMNS}, **d,
                         "seed_deltas": {int(s): float(b[s] - v[s]) for s in shared}})
    return pd.DataFrame(rows)


def trend(deltas: pd.DataFrame) -> pd.DataFrame:
    """Per variant with 3+ rungs: OLS of per-seed delta on log10(tokens), and the zero crossing.

    Columns: slope (nats per decade) with its interval, ``slope_resolved`` (interval excludes 0),
    ``crossover_tokens`` with ``crossover_low`` / ``crossover_high`` (delta method, t with N - 2
    degrees of freedom; NaN unless the slope is resolved) and ``extrapolated`` (the crossover lies
    outside the budgets that were run).
    """
    rows = []
    for name, group in deltas.groupby("name", sort=False):
        if group["tokens"].nunique() < MIN_RUNGS_FOR_TREND:
            continue
        x = np.array([np.log10(t) for t, seeds in zip(group["tokens"], group["seed_deltas"]) for _ in seeds])
        y = np.array([d for seeds in group["seed_deltas"] for d in seeds.values()])
        n = len(x)
        if n < 4:
            continue
        design = np.column_stack([np.ones(n), x])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        resid = y - design @ coef
        sigma2 = float(resid @ resid) / (n - 2)
        cov = sigma2 * np.linalg.inv(design.T @ design)
        t = sps.t.ppf(0.5 + CONFIDENCE / 2, n - 2)
        a, b = coef
        half = t * np.sqrt(cov[1, 1])
        resolved = bool(abs(b) > half)
        row = {"name": name, "order": group["order"].iloc[0], "label": group["label"].iloc[0],
               "rungs": int(group["tokens"].nunique()), "n": n, "intercept": a, "slope": b,
               "slope_low": b - half, "slope_high": b + half, "slope_resolved": resolved,
               "crossover_tokens": np.nan, "crossover_low": np.nan, "crossover_high": np.nan, "extrapolated": False}
        if resolved:
            x0 = -a / b
            grad = np.array([-1 / b, a / b**2])  # d x0 / d (a, b)
            sd = float(np.sqrt(grad @ cov @ grad))
            row.update(crossover_tokens=10**x0, crossover_low=10 ** (x0 - t * sd), crossover_high=10 ** (x0 + t * sd),
                       extrapolated=bool(not group["tokens"].min() <= 10**x0 <= group["tokens"].max()))
        rows.append(row)
    return pd.DataFrame(rows)


def _tokens(t: float) -> str:
    return f"{t / 1e6:.3g}M" if t >= 1e6 else f"{t / 1e3:.3g}k"


def summary_lines(deltas: pd.DataFrame, fits: pd.DataFrame) -> list[str]:
    """In plain words, per variant: its delta at each budget (resolved or within noise) and the trend."""
    lines = []
    fits = fits.set_index("name") if len(fits) else fits
    for name, group in sorted(deltas.groupby("name", sort=False), key=lambda item: item[1]["order"].iloc[0]):
        rungs_text = "; ".join(
            f"{_tokens(r['tokens'])}: {r['delta']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
            + (" resolved" if r["resolved"] else " within noise") for _, r in group.sort_values("tokens").iterrows())
        line = f"{name} vs SMoE ({interval_text(group['n_a'], paired=True)}): {rungs_text}."
        if name in getattr(fits, "index", []):
            f = fits.loc[name]
            line += (f" Trend {f['slope']:+.4f} nats per decade of tokens"
                     f" [{f['slope_low']:+.4f}, {f['slope_high']:+.4f}]"
                     + (", resolved" if f["slope_resolved"] else ", within noise: no crossover is claimed"))
            if np.isfinite(f["crossover_tokens"]):
                line += (f"; the line crosses zero at about {_tokens(f['crossover_tokens'])} tokens "
                         f"[{_tokens(f['crossover_low'])}, {_tokens(f['crossover_high'])}]"
                         + (" (an extrapolation beyond the budgets run)" if f["extrapolated"] else ""))
            line += "."
        elif group["tokens"].nunique() < MIN_RUNGS_FOR_TREND:
            line += f" No trend is fitted with fewer than {MIN_RUNGS_FOR_TREND} budgets."
        lines.append(line)
    return lines


def caption(deltas: pd.DataFrame, val_set: str) -> str:
    ci = interval_text(deltas["n_a"], paired=True) if len(deltas) else "no interval"
    return (f"Δ ln ppl vs SMoE at each training budget ({val_set}; positive: the variant is better), "
            f"paired by seed; error bars: {ci}. Dashed: a straight line in log tokens fitted where "
            f"{MIN_RUNGS_FOR_TREND}+ budgets were run; a marked zero crossing is an extrapolation of that trend.")


@styled
def plot_ladder(deltas: pd.DataFrame, fits: pd.DataFrame, val_set: str) -> Figure:
    """Delta vs training tokens (log x), one line per variant in the paper's order, with fitted trends."""
    if deltas.empty or deltas["tokens"].nunique() < 2:
        raise MissingData("fewer than two training budgets with an SMoE baseline")
    fig, axes = figure(SINGLE, 2.6)
    ax = axes[0][0]
    styles = line_styles(deltas)
    fits = fits.set_index("name") if len(fits) else fits
    for name, group in sorted(deltas.groupby("name", sort=False), key=lambda item: item[1]["order"].iloc[0]):
        group = group.sort_values("tokens")
        style = styles[group["label"].iloc[0]]
        err = np.vstack([group["delta"] - group["ci_low"], group["ci_high"] - group["delta"]])
        ax.errorbar(group["tokens"], group["delta"], yerr=np.where(np.isfinite(err), err, 0), color=style["color"],
                    marker=style["marker"], capsize=2, label=name)
        if name in getattr(fits, "index", []):
            fit = fits.loc[name]
            span = [group["tokens"].min(), group["tokens"].max()]
            if np.isfinite(fit["crossover_tokens"]):
                span = [min(span[0], fit["crossover_tokens"]), max(span[1], fit["crossover_tokens"])]
                ax.plot([fit["crossover_tokens"]], [0], marker="x", color=style["color"], markersize=6)
            xs = np.logspace(np.log10(span[0]), np.log10(span[1]), 30)
            ax.plot(xs, fit["intercept"] + fit["slope"] * np.log10(xs), linestyle="--", linewidth=0.8,
                    color=style["color"])
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xscale("log")
    budgets = sorted(deltas["tokens"].unique())
    ax.set_xticks(budgets, [_tokens(t) for t in budgets])  # the budgets that were run, as 300k / 1M / 3M
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("training tokens")
    ax.set_ylabel(f"Δ ln ppl vs SMoE ({val_set}, nats)")
    ax.legend()
    return fig
