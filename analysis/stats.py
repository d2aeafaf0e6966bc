"""Seed statistics: mean, standard deviation, 95% intervals and paired differences over seeds.

With the handful of seeds a sweep affords, a percentile bootstrap is the min-max of the runs (2
seeds) or nearly so (3), and claims far more confidence than the data carry. So the interval is
Student's t with df = n - 1 below :data:`BOOTSTRAP_FROM` seeds, and the BCa bootstrap (fixed
generator, so a rerun prints the same numbers) only from there on, where it is no longer
degenerate. Every interval carries its ``method``; :func:`interval_text` says it in words for
captions. A difference is *resolved* only with :data:`RESOLVE_MIN_N` or more seeds and an
interval that excludes zero (:func:`is_resolved`); otherwise it is within noise.
With one seed there is no interval; the note says so instead of failing.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.frame import METRIC, finished
from mhmoe.tracking import names

CONFIDENCE = 0.95
POWER = 0.80
BOOTSTRAP_FROM = 10  # seeds: Student t below, BCa bootstrap from here on
RESOLVE_MIN_N = 3
SEEDS_NEEDED_CAP = 1000  # beyond this the answer is "more tokens, not more seeds"
N_RESAMPLES = 9999
RNG_SEED = 0
T = "t"
BCA = "BCa"
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
    method: str = ""
    """:data:`T` or :data:`BCA`; empty when there is no interval."""


def interval_method(n: int) -> str:
    """The interval used for ``n`` seeds (``""`` below two: no interval)."""
    return "" if n < 2 else BCA if n >= BOOTSTRAP_FROM else T


def interval_text(ns, *, paired: bool = False) -> str:
    """What the intervals over seed counts ``ns`` are, in words for a caption or an index line.

    ``interval_text([3, 3])`` -> ``"95% Student-t CI (df = n−1), n = 3 seeds"``.
    """
    ns = sorted({int(n) for n in ns if pd.notna(n) and n > 0})
    if not ns:
        return "no seeds"
    count = seed_count(ns)
    of = " of the paired differences" if paired else ""
    methods = {interval_method(n) for n in ns} - {""}
    level = f"{CONFIDENCE:.0%}"
    if not methods:
        return f"{count}, no interval"
    if methods == {T}:
        what = f"{level} Student-t CI{of} (df = n−1)"
    elif methods == {BCA}:
        what = f"{level} BCa bootstrap CI{of}"
    else:
        what = (f"{level} CI{of}: Student-t (df = n−1) below {BOOTSTRAP_FROM} seeds, "
                f"BCa bootstrap from {BOOTSTRAP_FROM}")
    return f"{what}, {count}" + (" (1 seed: no interval)" if 1 in ns else "")


def seed_count(ns) -> str:
    """``"n = 3 seeds"``, ``"n = 2–3 seeds"`` (a range when points differ), ``"no seeds"``."""
    ns = sorted({int(n) for n in ns if pd.notna(n) and n > 0})
    if not ns:
        return "no seeds"
    return f"n = {ns[0]} seed{'s' if ns[0] > 1 else ''}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]} seeds"


def t_half_width(std, n):
    """Half-width of the Student-t interval of a mean: t(1 - alpha/2, df = n - 1) * std / sqrt(n)."""
    n = np.asarray(n, dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        return stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * np.asarray(std, dtype="float64") / np.sqrt(n)


def _bca(samples: tuple[np.ndarray, ...], statistic, **kwargs) -> tuple[float, float]:
    res = stats.bootstrap(samples, statistic, n_resamples=N_RESAMPLES, confidence_level=CONFIDENCE,
                          method="BCa", rng=np.random.default_rng(RNG_SEED), **kwargs)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def seed_stats(values) -> SeedStats:
    """Mean, sample std (ddof 1) and 95% CI of the mean of ``values`` (t below 10 seeds, BCa from 10)."""
    x = np.asarray(values, dtype="float64")
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return SeedStats(0, np.nan, np.nan, np.nan, np.nan, "no values")
    mean = float(x.mean())
    if n == 1:
        return SeedStats(1, mean, np.nan, np.nan, np.nan, NO_CI)
    std = float(x.std(ddof=1))
    method = interval_method(n)
    if np.ptp(x) == 0:  # no spread: the interval is the single value (BCa is undefined there)
        return SeedStats(n, mean, std, mean, mean, method=method)
    if method == T:
        h = float(t_half_width(std, n))
        return SeedStats(n, mean, std, mean - h, mean + h, method=T)
    low, high = _bca((x,), np.mean)
    return SeedStats(n, mean, std, low, high, method=BCA)


def mean_ci_columns(matrix: np.ndarray) -> pd.DataFrame:
    """Per-column n, mean and 95% CI (:func:`seed_stats` rules) of a (seeds x columns) matrix; NaN = missing seed.

    Columns with fewer than :data:`BOOTSTRAP_FROM` seeds (every curve of a small sweep) get the
    t interval in one vectorised step; the rest go through :func:`seed_stats` one by one.
    """
    m = np.asarray(matrix, dtype="float64")
    present = np.isfinite(m)
    n = present.sum(axis=0)
    with warnings.catch_warnings():  # an all-missing or one-seed column is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(m, axis=0) if m.size else np.zeros(m.shape[1:])
        std = np.nanstd(m, axis=0, ddof=1) if m.size else np.zeros(m.shape[1:])
    h = np.where((n >= 2) & (n < BOOTSTRAP_FROM), t_half_width(std, n), np.nan)
    out = pd.DataFrame({"n": n, "mean": mean, "ci_low": mean - h, "ci_high": mean + h,
                        "method": [interval_method(k) for k in n]})
    for j in np.flatnonzero(n >= BOOTSTRAP_FROM):
        s = seed_stats(m[:, j])
        out.loc[j, ["ci_low", "ci_high"]] = s.ci_low, s.ci_high
    return out


def clip_to_range(low, high, metric: str):
    """Interval bounds clipped to the values ``metric`` can take (a load imbalance is >= 1, an activation
    ratio <= 1). Coverage is unchanged, since the true mean lies in that range too. A t interval over
    2-3 seeds otherwise reaches far past it."""
    lo, hi = names.metric_range(metric)
    return np.clip(low, lo, hi), np.clip(high, lo, hi)


def is_resolved(n: int, ci_low: float, ci_high: float) -> bool:
    """A difference is resolved only with 3+ seeds and an interval that excludes zero."""
    return bool(n >= RESOLVE_MIN_N and np.isfinite(ci_low) and (ci_low > 0 or ci_high < 0))


def seeds_needed(std: float, delta: float, *, power: float | None = None) -> float:
    """Seeds of paired differences with SD ``std`` that resolve a true difference ``delta``.

    ``power=None``: the fewest seeds whose expected 95% t interval around ``delta`` excludes zero
    (t(0.975, n-1) * std / sqrt(n) < |delta|, a coin flip in practice); ``power=0.8``: the fewest
    seeds for which a two-sided t test at the 5% level rejects zero with that probability
    (noncentral t). Never below :data:`RESOLVE_MIN_N`; ``inf`` past :data:`SEEDS_NEEDED_CAP`
    (more seeds will not do: the difference is too small for this noise); NaN without an SD.
    The t rule is used at every n, also where the report's interval is BCa (it is the
    normal-theory answer the bootstrap approaches).
    """
    if not (np.isfinite(std) and np.isfinite(delta)) or delta == 0:
        return np.nan
    if std == 0:
        return float(RESOLVE_MIN_N)
    n = np.arange(RESOLVE_MIN_N, SEEDS_NEEDED_CAP + 1, dtype="float64")
    crit = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)
    if power is None:
        ok = crit * std / np.sqrt(n) < abs(delta)
    else:
        nc = abs(delta) * np.sqrt(n) / std
        ok = stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc) >= power
    return float(n[np.argmax(ok)]) if ok.any() else np.inf


def aggregate(runs: pd.DataFrame, metrics: list[str] | None = None, *, only_finished: bool = True) -> pd.DataFrame:
    """Long frame: one row per (grid point, metric) with n, mean, std, ci_low, ci_high, note, method.

    ``metrics`` are metric names without the ``metrics/`` prefix (default: every metric column).
    Failed or running runs are left out unless ``only_finished`` is False: their last value is
    from an earlier step and would bias the mean.
    """
    frame = finished(runs) if only_finished else runs
    if metrics is None:
        metrics = [c[len(METRIC):] for c in runs.columns if c.startswith(METRIC)]
    rows = []
    for _point, group in frame.groupby("point", sort=False):
        keys = group.iloc[0][GROUP_COLUMNS].to_dict()
        for metric in metrics:
            column = METRIC + metric
            values = group[column] if column in group.columns else pd.Series(dtype="float64")
            have = values.notna()
            s = seed_stats(values.to_numpy(dtype="float64"))
            low, high = clip_to_range(s.ci_low, s.ci_high, metric)
            rows.append({**keys, "metric": metric, **asdict(s), "ci_low": float(low), "ci_high": float(high),
                         "seeds": _join(group.loc[have, "seed"]), "run_ids": " ".join(group.loc[have, "run_id"])})
    columns = [*GROUP_COLUMNS, "metric", "n", "mean", "std", "ci_low", "ci_high", "note", "method", "seeds",
               "run_ids"]
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
    """``mean(a) - mean(b)`` with a 95% CI, whether it is resolved, and the SD behind it.

    Paired over shared seeds when 2+ are shared (seed-to-seed spread is far larger than the
    differences between variants, and pairing cancels it); otherwise the two samples are
    independent: Welch's t interval, or the two-sample BCa bootstrap when both have 10+ seeds.
    ``sd`` is the SD of the paired differences (paired) or sqrt(var_a + var_b) (unpaired).
    """
    shared = a.index.intersection(b.index)
    if len(shared) >= 2:
        s = seed_stats((a[shared] - b[shared]).to_numpy())
        return {"delta": s.mean, "ci_low": s.ci_low, "ci_high": s.ci_high, "n_a": len(shared),
                "n_b": len(shared), "paired": True, "method": s.method, "sd": s.std,
                "resolved": is_resolved(s.n, s.ci_low, s.ci_high), "note": s.note}
    delta = float(a.mean() - b.mean()) if len(a) and len(b) else np.nan
    out = {"delta": delta, "ci_low": np.nan, "ci_high": np.nan, "n_a": len(a), "n_b": len(b), "paired": False,
           "method": "", "sd": np.nan, "resolved": False}
    if len(a) < 2 or len(b) < 2:
        out["note"] = "no values" if np.isnan(delta) else "CI unavailable (fewer than 2 seeds)"
        return out
    va, vb = a.var(ddof=1), b.var(ddof=1)
    out["sd"] = float(np.sqrt(va + vb))
    if min(len(a), len(b)) >= BOOTSTRAP_FROM and va + vb > 0:
        low, high = _bca((a.to_numpy(), b.to_numpy()), _mean_diff, vectorized=True)
        method = BCA
    else:
        se2 = va / len(a) + vb / len(b)
        df = se2 ** 2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1)) if se2 > 0 else 1.0
        h = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df) * np.sqrt(se2))
        low, high, method = delta - h, delta + h, T
    out.update(ci_low=low, ci_high=high, method=method, note="",
               resolved=is_resolved(min(len(a), len(b)), low, high))
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
