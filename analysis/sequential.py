"""Seeds until a comparison resolves: a group-sequential rule that keeps its error rate.

A sweep that adds one seed at a time and stops at the first 95% interval that excludes zero is
not a 95% procedure: with looks at 3, 4, ..., 10 seeds a true zero difference is declared
resolved about 15-20% of the time. This module gives every look its own, wider threshold so that
the chance of *any* false resolution over the whole look schedule is at most ``alpha``.

The rule (a repeated confidence interval, Jennison & Turnbull 1989, with a Wang–Tsiatis boundary
shape): at look ``n`` (the first ``n`` paired seeds, ``start <= n <= max``) the interval is

    mean_n ± c_n · sd_n / sqrt(n),   c_n = t⁻¹_{n−1}(Φ(C · (n / max)^(ρ − 1/2))),

with ρ = :data:`SHAPE` (0.25: between Pocock's flat boundary, which spends the error early and
loses power at the last look, and O'Brien–Fleming's, which almost never stops early). Each
threshold is a normal-scale boundary carried to Student's t with that look's degrees of freedom,
so the unknown seed-to-seed spread is estimated at every look. ``C`` is calibrated by a seeded
Monte Carlo of the whole schedule under a true zero (:func:`boundary`): because every look's
statistic ``(mean_n − δ) / (sd_n / sqrt(n))`` has the same joint law for every true δ, the
intervals of *all* looks cover δ together with probability ``1 − alpha``. Two consequences:

- the running intersection of the intervals over the looks so far is also a valid interval
  (a verdict never flips back once the data resolved it), and
- the rule may stop for any reason at any look (resolved, equivalent, no longer able to resolve,
  or out of budget) without losing its stated error rate; a look that is skipped only lowers it.

Verdicts per comparison (``variant − baseline``; for perplexity the difference of logs, in nats):
``better`` / ``worse`` (the interval excludes zero), ``equivalent`` (with a ``margin``: the
interval lies inside ±margin, a two-sided version of two one-sided tests), ``unresolved`` with a
bound ``|delta| < B`` (the interval's farthest edge) once the schedule ends or the comparison can no
longer resolve, and ``continue`` while another seed could still change the answer. *Can no longer
resolve* (futility, never a reason to resolve): the observed difference is under :data:`FUTILITY`
(half) of the half-width that ``max`` seeds would reach at the current spread, and the interval at
``max`` could not fit inside the margin either. Under a true zero this halves the seeds spent (4.6
instead of 9.8 of 3..10) for a few points of power (0.66 instead of 0.72 at one paired SD);
futility stops only ever make a false resolution rarer.

:func:`simulate` runs the whole procedure on synthetic normal paired differences; the tests hold
its false-resolution rate under a true zero at or below ``alpha`` and report its power.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
SHAPE = 0.25
"""Wang–Tsiatis ρ of the boundary: 0 = O'Brien–Fleming-like, 0.5 = Pocock."""
CALIBRATION_DRAWS = 200_000
CALIBRATION_SEED = 20241125
MAX_SEEDS = 50
FUTILITY = 0.5
"""Stop adding seeds once the observed difference is under this share of the half-width ``max``
seeds would reach at the current spread (it could not plausibly resolve in the schedule)."""
METHOD = (f"group-sequential repeated {1 - ALPHA:.0%} confidence intervals (Wang–Tsiatis boundary, ρ = {SHAPE}, "
          "calibrated for the look schedule, Student-t at each look)")

VERDICTS = ("better", "worse", "equivalent", "unresolved", "continue", "pending")
"""``pending``: fewer than ``start`` paired seeds; ``continue``: another seed could still decide."""
FINAL = ("better", "worse", "equivalent", "unresolved")


class DesignError(ValueError):
    """A seed schedule or margin that the rule cannot run; one line naming the field."""


@dataclass(frozen=True, kw_only=True)
class SeedSchedule:
    """Looks at ``start``, ``start + 1``, ..., ``max`` paired seeds."""

    start: int = 3
    max: int = 10
    alpha: float = ALPHA

    def __post_init__(self) -> None:
        for name in ("start", "max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise DesignError(f"seeds.{name}={value!r} must be an integer")
        if not 2 <= self.start <= MAX_SEEDS:
            raise DesignError(f"seeds.start={self.start} must be an integer from 2 to {MAX_SEEDS}")
        if not self.start <= self.max <= MAX_SEEDS:
            raise DesignError(f"seeds.max={self.max} must be an integer from seeds.start={self.start} to {MAX_SEEDS}")
        if not 0 < self.alpha < 0.5:
            raise DesignError(f"alpha={self.alpha!r} must be in (0, 0.5)")

    @property
    def looks(self) -> np.ndarray:
        return np.arange(self.start, self.max + 1)

    def thresholds(self) -> np.ndarray:
        """``c_n`` on the t scale for every look ``n`` in :attr:`looks`."""
        return boundary(self.start, self.max, self.alpha)

    def threshold(self, n: int) -> float:
        return float(self.thresholds()[min(n, self.max) - self.start])


def _weights(start: int, max_: int) -> np.ndarray:
    return (np.arange(start, max_ + 1) / max_) ** (SHAPE - 0.5)


def _t_stats(draws: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Running mean, sd (ddof 1) and t statistic of each row's first n values, for n = start..columns."""
    n = np.arange(1, draws.shape[1] + 1)
    total = np.cumsum(draws, axis=1)
    mean = total / n
    sq = np.cumsum(draws**2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.maximum(sq - n * mean**2, 0.0) / (n - 1)
        sd = np.sqrt(var)
        t = mean / (sd / np.sqrt(n))
    return mean[:, start - 1 :], sd[:, start - 1 :], t[:, start - 1 :]


@functools.lru_cache(maxsize=64)
def boundary(start: int, max_: int, alpha: float = ALPHA) -> np.ndarray:
    """Calibrated t-scale thresholds for looks start..max (seeded Monte Carlo, cached).

    |T_n| > c_n  <=>  z_n / w_n > C with z_n = Φ⁻¹(F_{t,n−1}(|T_n|)) and w_n the boundary shape, so
    ``C`` is the (1 − alpha) quantile of max_n z_n / w_n under a true zero (no root finding).
    """
    from scipy import stats  # lazy: spec parsing imports this module, and scipy costs a CLI ~0.3 s

    df = np.arange(start, max_ + 1) - 1
    if start == max_:  # one look: the plain Student-t interval, no calibration needed
        return np.array([stats.t.isf(alpha / 2, df[0])])
    rng = np.random.default_rng(CALIBRATION_SEED)
    draws = rng.standard_normal((CALIBRATION_DRAWS, max_))
    _, _, t = _t_stats(draws, start)
    z = stats.norm.isf(stats.t.sf(np.abs(t), df))
    c = float(np.quantile(np.max(z / _weights(start, max_), axis=1), 1 - alpha))
    return stats.t.isf(stats.norm.sf(c * _weights(start, max_)), df)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """Where one comparison stands after its paired seeds so far."""

    verdict: str
    """One of :data:`VERDICTS`."""
    n: int
    """Paired seeds used (the look; capped at the schedule's ``max``)."""
    delta: float
    """Mean paired difference (variant − baseline) at that look."""
    sd: float
    ci_low: float
    ci_high: float
    """The running intersection of the repeated intervals (NaN before ``start``)."""
    bound: float
    """``|delta| < bound`` at the stated level: the interval's farthest edge from zero."""

    @property
    def final(self) -> bool:
        return self.verdict in FINAL

    @property
    def resolved(self) -> bool:
        return self.verdict in ("better", "worse")


def decide(diffs: np.ndarray, schedule: SeedSchedule, *, margin: float | None = None,
           lower_is_better: bool = True) -> dict[str, np.ndarray]:
    """The rule over many comparisons at once: ``diffs`` is (comparisons, seeds) in seed order.

    Every row is read at its look n = its number of columns (capped at ``max``); NaN rows are not
    allowed (pass only the complete paired prefix). Returns arrays ``verdict``, ``n``, ``delta``,
    ``sd``, ``ci_low``, ``ci_high``, ``bound``, one entry per row.
    """
    diffs = np.asarray(diffs, dtype="float64")
    rows, cols = diffs.shape
    n = min(cols, schedule.max)
    out = {"n": np.full(rows, n), "delta": np.full(rows, np.nan), "sd": np.full(rows, np.nan),
           "ci_low": np.full(rows, np.nan), "ci_high": np.full(rows, np.nan), "bound": np.full(rows, np.nan),
           "verdict": np.full(rows, "pending", dtype=object)}
    if n >= 1:
        out["delta"] = diffs[:, :n].mean(axis=1)
    if n < schedule.start:
        return out
    mean, sd, _ = _t_stats(diffs[:, :n], schedule.start)
    looks = np.arange(schedule.start, n + 1)
    half = schedule.thresholds()[: len(looks)] * sd / np.sqrt(looks)
    low = np.max(mean - half, axis=1)
    high = np.min(mean + half, axis=1)
    # Intervals at different looks cover the truth together, so an empty intersection is itself a
    # (rare, alpha-bounded) sign of a wrong model; keep the last look's interval then.
    empty = low > high
    low = np.where(empty, (mean - half)[:, -1], low)
    high = np.where(empty, (mean + half)[:, -1], high)
    sd_n = sd[:, -1]
    bound = np.maximum(np.abs(low), np.abs(high))
    out.update(sd=sd_n, ci_low=low, ci_high=high, bound=bound)
    excludes = (low > 0) | (high < 0)
    variant_lower = high < 0
    better = excludes & (variant_lower == lower_is_better)
    verdict = np.where(excludes, np.where(better, "better", "worse"), "continue").astype(object)
    if margin is not None:
        verdict = np.where(~excludes & (low > -margin) & (high < margin), "equivalent", verdict)
    undecided = verdict == "continue"
    if n >= schedule.max:
        verdict = np.where(undecided, "unresolved", verdict)
    else:
        h_max = schedule.threshold(schedule.max) * sd_n / np.sqrt(schedule.max)
        delta_n = np.abs(mean[:, -1])
        could_resolve = delta_n >= FUTILITY * h_max
        could_be_equivalent = (delta_n + h_max < margin) if margin is not None else np.zeros(rows, dtype=bool)
        verdict = np.where(undecided & ~could_resolve & ~could_be_equivalent, "unresolved", verdict)
    out["verdict"] = verdict
    return out


def sequential_verdict(diffs, schedule: SeedSchedule, *, margin: float | None = None,
                       lower_is_better: bool = True) -> Verdict:
    """:func:`decide` for one comparison's paired differences (seed order, no gaps)."""
    row = np.asarray(diffs, dtype="float64").reshape(1, -1)
    out = decide(row, schedule, margin=margin, lower_is_better=lower_is_better)
    return Verdict(verdict=str(out["verdict"][0]), n=int(out["n"][0]),
                   **{k: float(out[k][0]) for k in ("delta", "sd", "ci_low", "ci_high", "bound")})


@dataclass(frozen=True, kw_only=True)
class SimulationResult:
    """The whole procedure on ``runs`` synthetic comparisons with a true difference ``effect`` (in SDs)."""

    effect: float
    runs: int
    resolved: float
    """Fraction declared better or worse (false positives when ``effect`` is 0)."""
    wrong_sign: float
    equivalent: float
    covered: float
    """Fraction whose final interval contains the true difference."""
    mean_seeds: float


def simulate(schedule: SeedSchedule, effect: float, *, runs: int = 20_000, seed: int = 0,
             margin: float | None = None) -> SimulationResult:
    """Run the stopping rule as a sweep does: one more seed while the verdict is ``continue``.

    Paired differences are N(effect, 1): ``effect`` and ``margin`` are in paired SDs.
    """
    rng = np.random.default_rng(seed)
    diffs = rng.normal(effect, 1.0, size=(runs, schedule.max))
    stopped = np.zeros(runs, dtype=bool)
    final = {k: np.full(runs, np.nan) for k in ("n", "ci_low", "ci_high")}
    verdict = np.full(runs, "continue", dtype=object)
    for n in schedule.looks:
        active = ~stopped
        out = decide(diffs[active, :n], schedule, margin=margin)
        ends = out["verdict"] != "continue"
        idx = np.flatnonzero(active)[ends]
        verdict[idx] = out["verdict"][ends]
        for k in final:
            final[k][idx] = out[k][ends]
        stopped[idx] = True
    resolved = np.isin(verdict, ("better", "worse"))
    truth_lower = effect < 0
    wrong = (verdict == "better") & (not truth_lower) | (verdict == "worse") & truth_lower
    return SimulationResult(
        effect=effect, runs=runs, resolved=float(resolved.mean()),
        wrong_sign=float(wrong.mean()) if effect != 0 else float(resolved.mean()),
        equivalent=float((verdict == "equivalent").mean()),
        covered=float(((final["ci_low"] <= effect) & (effect <= final["ci_high"])).mean()),
        mean_seeds=float(np.nanmean(final["n"])),
    )


__all__ = ["ALPHA", "FINAL", "FUTILITY", "METHOD", "SHAPE", "VERDICTS", "DesignError", "SeedSchedule",
           "SimulationResult", "Verdict", "boundary", "decide", "sequential_verdict", "simulate"]
