"""Seed statistics: mean, standard deviation, 95% bootstrap CIs and paired differences.

Bootstraps use the percentile method with a fixed generator: with 2-5 seeds BCa is degenerate
(it needs a jackknife over a handful of values), and a fixed generator makes every table cell
reproducible, so a rerun of the report prints the same numbers.
With one seed there is no CI; the note says so instead of failing.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.frame import METRIC, finished

CONFIDENCE = 0.95
N_RESAMPLES = 9999
RNG_SEED = 0
NO_CI = "CI unavailable (1 seed)"
GROUP_COLUMNS = ["point", "label", "variant", "family", "heads", "experts", "top_k", "weight_bits",
                 "head_proj", "merge_proj", "shared", "paper_model"]


@dataclass(frozen=True)
class SeedStats:
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    note: str = ""


def seed_stats(values, *, n_resamples: int = N_RESAMPLES) -> SeedStats:
    """Mean, sample std (ddof 1) and 95% percentile-bootstrap CI of the mean of ``values``."""
    x = np.asarray(values, dtype="float64")
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return SeedStats(0, np.nan, np.nan, np.nan, np.nan, "no values")
    mean = float(x.mean())
    if n == 1:
        return SeedStats(1, mean, np.nan, np.nan, np.nan, NO_CI)
    std = float(x.std(ddof=1))
    if np.ptp(x) == 0:  # scipy warns on degenerate data; the CI is the single value
        return SeedStats(n, mean, std, mean, mean)
    res = stats.bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=CONFIDENCE,
                          method="percentile", rng=np.random.default_rng(RNG_SEED))
    ci = res.confidence_interval
    return SeedStats(n, mean, std, float(ci.low), float(ci.high))


def mean_ci_columns(matrix: np.ndarray, *, n_resamples: int = 2000) -> pd.DataFrame:
    """Per-column mean and 95% CI of a (seeds x columns) matrix; NaN = missing seed.

    Columns that every seed covers are bootstrapped in one vectorised call (curves have many
    steps); the rest one by one.
    """
    m = np.asarray(matrix, dtype="float64")
    with warnings.catch_warnings():  # an all-missing column is a NaN mean, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(m, axis=0) if m.size else []
    out = pd.DataFrame({"n": np.isfinite(m).sum(axis=0), "mean": mean})
    out["ci_low"], out["ci_high"] = np.nan, np.nan
    full = np.isfinite(m).all(axis=0)
    if m.shape[0] >= 2 and full.any():
        block = m[:, full]
        varying = np.ptp(block, axis=0) > 0
        low, high = block.mean(axis=0), block.mean(axis=0)
        if varying.any():
            res = stats.bootstrap((block[:, varying],), np.mean, axis=0, vectorized=True,
                                  n_resamples=n_resamples, confidence_level=CONFIDENCE,
                                  method="percentile", rng=np.random.default_rng(RNG_SEED))
            low[varying], high[varying] = res.confidence_interval.low, res.confidence_interval.high
        out.loc[full, "ci_low"], out.loc[full, "ci_high"] = low, high
    for j in np.flatnonzero(~full):
        s = seed_stats(m[:, j], n_resamples=n_resamples)
        out.loc[j, ["ci_low", "ci_high"]] = s.ci_low, s.ci_high
    return out


def aggregate(runs: pd.DataFrame, metrics: list[str] | None = None, *, only_finished: bool = True) -> pd.DataFrame:
    """Long frame: one row per (grid point, metric) with n, mean, std, ci_low, ci_high, note.

    ``metrics`` are metric names without the ``metrics/`` prefix (default: every metric column).
    Failed or running runs are left out unless ``only_finished`` is False: their last value is
    from an earlier step and would bias the mean.
    """
    frame = finished(runs) if only_finished else runs
    if metrics is None:
        metrics = [c[len(METRIC):] for c in runs.columns if c.startswith(METRIC)]
    rows = []
    for point, group in frame.groupby("point", sort=False):
        keys = group.iloc[0][GROUP_COLUMNS].to_dict()
        for metric in metrics:
            column = METRIC + metric
            values = group[column] if column in group.columns else pd.Series(dtype="float64")
            have = values.notna()
            s = seed_stats(values.to_numpy(dtype="float64"))
            rows.append({**keys, "metric": metric, **asdict(s),
                         "seeds": _join(group.loc[have, "seed"]), "run_ids": " ".join(group.loc[have, "run_id"])})
    columns = [*GROUP_COLUMNS, "metric", "n", "mean", "std", "ci_low", "ci_high", "note", "seeds", "run_ids"]
    return pd.DataFrame(rows, columns=columns)


def _join(seeds: pd.Series) -> str:
    return " ".join(f"{s:g}" for s in seeds.dropna().sort_values())


def per_seed(runs: pd.DataFrame, point: str, metric: str, *, log: bool = False) -> pd.Series:
    """Values of one point's metric indexed by seed (finished runs), optionally in log space."""
    group = finished(runs)
    group = group[group["point"] == point]
    values = group.set_index("seed")[METRIC + metric] if METRIC + metric in group.columns else pd.Series(dtype=float)
    values = values.dropna().astype("float64")
    values = values[~values.index.duplicated()]
    return np.log(values) if log else values


def difference(a: pd.Series, b: pd.Series) -> dict:
    """``mean(a) - mean(b)`` with a 95% CI: paired over shared seeds when 2+ are shared."""
    shared = a.index.intersection(b.index)
    if len(shared) >= 2:
        s = seed_stats((a[shared] - b[shared]).to_numpy())
        return {"delta": s.mean, "ci_low": s.ci_low, "ci_high": s.ci_high, "n_a": len(shared),
                "n_b": len(shared), "paired": True, "note": s.note}
    delta = float(a.mean() - b.mean()) if len(a) and len(b) else np.nan
    out = {"delta": delta, "ci_low": np.nan, "ci_high": np.nan, "n_a": len(a), "n_b": len(b), "paired": False}
    if len(a) >= 2 and len(b) >= 2:
        res = stats.bootstrap((a.to_numpy(), b.to_numpy()), _mean_diff, n_resamples=N_RESAMPLES,
                              confidence_level=CONFIDENCE, method="percentile", vectorized=True,
                              rng=np.random.default_rng(RNG_SEED))
        out.update(ci_low=float(res.confidence_interval.low), ci_high=float(res.confidence_interval.high), note="")
    else:
        out["note"] = "no values" if np.isnan(delta) else "CI unavailable (fewer than 2 seeds)"
    return out


def _mean_diff(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def paired_differences(runs: pd.DataFrame, metric: str, baseline: str, *, log: bool = False) -> pd.DataFrame:
    """Every point minus ``baseline`` (a point id or label) on ``metric``, paired by seed.

    ``log=True`` compares ``ln(metric)``: for perplexity the difference is in nats.
    """
    pts = finished(runs).drop_duplicates("point")
    match = pts[(pts["point"] == baseline) | (pts["label"] == baseline)]
    if match.empty:
        raise KeyError(f"baseline {baseline!r} is neither a point nor a label of the sweep")
    base = match.iloc[0]["point"]
    b = per_seed(runs, base, metric, log=log)
    rows = []
    for _, p in pts[pts["point"] != base].iterrows():
        a = per_seed(runs, p["point"], metric, log=log)
        rows.append({"point": p["point"], "label": p["label"], "baseline": match.iloc[0]["label"],
                     "metric": metric, "log": log, **difference(a, b)})
    return pd.DataFrame(rows)
