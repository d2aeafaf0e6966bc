"""Seed statistics: t and BCa intervals against textbook values and by simulation, resolved, seeds needed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.frame import coerce_param, strip_seed, val_sets
from analysis.stats import (
    GROUP_COLUMNS,
    NO_CI,
    aggregate,
    clip_to_range,
    difference,
    interval_text as seed_text,
    is_resolved,
    mean_ci_columns,
    paired_differences,
    seed_stats,
    seeds_needed,
)
from tests.analysis.frames import PAPER_ORDER, runs_frame

# Two-sided 95% critical values of Student's t from a printed table (df = 2, 4, 8).
TEXTBOOK_T975 = {2: 4.303, 4: 2.776, 8: 2.306}


@pytest.mark.parametrize("n", sorted(k + 1 for k in TEXTBOOK_T975))
def test_seed_stats_is_the_student_t_interval_below_ten_seeds(n):
    x = np.arange(n, dtype=float)  # mean (n-1)/2, sd sqrt(n(n+1)/12)
    s = seed_stats(x)
    half = TEXTBOOK_T975[n - 1] * s.std / np.sqrt(n)
    assert s.method == "t" and s.mean == pytest.approx((n - 1) / 2)
    assert s.std == pytest.approx(np.sqrt(n * (n + 1) / 12))
    assert s.ci_high - s.mean == pytest.approx(half, abs=1e-3) and s.mean - s.ci_low == pytest.approx(half, abs=1e-3)
    assert s.ci_high - s.mean == pytest.approx(stats.t.ppf(0.975, n - 1) * s.std / np.sqrt(n), rel=1e-12)


def test_three_seeds_interval_is_wider_than_their_range():
    s = seed_stats([10.0, 10.4, 10.2])  # the percentile bootstrap said [10.0, 10.4]
    assert s.ci_low == pytest.approx(10.2 - 4.303 * 0.2 / np.sqrt(3), abs=1e-3) and s.ci_low < 10.0 < 10.4 < s.ci_high


def test_bca_bootstrap_from_ten_seeds_and_reproducible():
    x = np.random.default_rng(3).normal(5.0, 1.0, size=12)
    s = seed_stats(x)
    assert s.method == "BCa" and s.ci_low < s.mean < s.ci_high
    t_half = stats.t.ppf(0.975, 11) * s.std / np.sqrt(12)
    assert (s.ci_high - s.ci_low) / 2 == pytest.approx(t_half, rel=0.3)  # normal data: close to t
    assert seed_stats(x) == s  # fixed generator: reproducible tables
    assert seed_stats(x[:9]).method == "t"


@pytest.mark.parametrize("n", [3, 5])
def test_t_interval_covers_the_true_mean_95_percent_of_the_time(n):
    # 4000 synthetic experiments: binomial SD of the coverage is 0.0034, a z interval would give
    # 0.81 (n = 3) / 0.88 (n = 5) and the old percentile bootstrap about 0.75 / 0.80.
    m = np.random.default_rng(n).normal(1.0, 0.3, size=(n, 4000))
    out = mean_ci_columns(m)
    coverage = ((out["ci_low"] < 1.0) & (1.0 < out["ci_high"])).mean()
    assert coverage == pytest.approx(0.95, abs=0.012)
    one = seed_stats(m[:, 7])
    assert (out.loc[7, "ci_low"], out.loc[7, "ci_high"]) == pytest.approx((one.ci_low, one.ci_high))


def test_seed_stats_one_seed_and_degenerate():
    one = seed_stats([7.0, np.nan])
    assert one.n == 1 and one.mean == 7.0 and np.isnan(one.ci_low) and one.note == NO_CI and one.method == ""
    same = seed_stats([3.0, 3.0])
    assert (same.ci_low, same.ci_high) == (3.0, 3.0)
    assert seed_stats([]).n == 0


def test_mean_ci_columns_matches_per_column_stats():
    m = np.array([[1.0, 2.0, 5.0, 4.0], [1.2, 2.0, np.nan, np.nan], [1.4, 2.0, 5.2, np.nan]])
    out = mean_ci_columns(m)
    assert list(out["n"]) == [3, 3, 2, 1]
    assert out["mean"].tolist() == pytest.approx([1.2, 2.0, 5.1, 4.0])
    for j in range(3):
        s = seed_stats(m[:, j])
        assert (out.loc[j, "ci_low"], out.loc[j, "ci_high"]) == pytest.approx((s.ci_low, s.ci_high))
    assert out.loc[1, "ci_low"] == out.loc[1, "ci_high"] == 2.0
    assert np.isnan(out.loc[3, "ci_low"]) and list(out["method"]) == ["t", "t", "t", ""]


def test_resolved_needs_three_seeds_and_an_interval_excluding_zero():
    assert is_resolved(3, 0.01, 0.02) and is_resolved(3, -0.02, -0.01)
    assert not is_resolved(2, 0.01, 0.02)  # two seeds never resolve, however tight
    assert not is_resolved(5, -0.01, 0.02) and not is_resolved(5, np.nan, np.nan)


def test_paired_difference_cancels_the_seed_effect():
    # seed-to-seed spread (0.05 nats) far above the true difference (0.01), tiny paired noise
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 0.05, size=4)
    a = pd.Series(seed_effect + 0.01 + rng.normal(0, 0.001, 4))
    b = pd.Series(seed_effect + rng.normal(0, 0.001, 4))
    paired = difference(a, b)
    assert paired["paired"] and paired["method"] == "t" and paired["resolved"]
    assert paired["sd"] == pytest.approx((a - b).std())
    unpaired = difference(a, b.set_axis(range(10, 14)))
    assert not unpaired["paired"] and unpaired["method"] == "t" and not unpaired["resolved"]
    assert unpaired["ci_low"] < 0 < unpaired["ci_high"]


def test_seeds_needed_is_the_smallest_n_that_resolves():
    sd, delta = 0.02, 0.036
    n = seeds_needed(sd, delta)
    half = lambda k: stats.t.ppf(0.975, k - 1) * sd / np.sqrt(k)  # noqa: E731
    assert n == 4 and half(n) < delta <= half(n - 1)
    assert seeds_needed(sd, -delta) == n  # either sign
    assert seeds_needed(0.0, delta) == 3 and np.isnan(seeds_needed(np.nan, delta))
    assert seeds_needed(0.1, 1e-4) == np.inf  # too small for this noise: no seed count will do


def test_seeds_needed_at_80_percent_power_resolves_4_in_5_experiments():
    sd, delta = 0.02, 0.025
    n = int(seeds_needed(sd, delta, power=0.8))
    assert n == 8 and seeds_needed(sd, delta) == 5
    rng = np.random.default_rng(1)  # noncentral t: power 0.86 at 8 seeds, 0.69 at 6
    for k, lo, hi in ((n, 0.8, 1.0), (n - 2, 0.0, 0.75)):
        out = mean_ci_columns(rng.normal(delta, sd, size=(k, 4000)))
        rate = np.mean([is_resolved(k, lo_, hi_) for lo_, hi_ in zip(out["ci_low"], out["ci_high"])])
        assert lo <= rate < hi, (k, rate)


def test_interval_text_names_the_method_and_n():
    assert seed_text([3, 3]) == "95% Student-t CI (df = n−1), n = 3 seeds"
    assert seed_text([2, 3], paired=True) == "95% Student-t CI of the paired differences (df = n−1), n = 2–3 seeds"
    assert "BCa" in seed_text([12]) and "Student-t" in seed_text([3, 12])
    assert seed_text([1]) == "n = 1 seed, no interval"


def test_aggregate_one_row_per_point_and_metric():
    runs = runs_frame(PAPER_ORDER, status={"dense": "FAILED"})
    agg = aggregate(runs)
    assert set(agg["label"]) == {"smoe", "fine_grained", "mhmoe-h2", "mhmoe-h3"}  # failed runs left out
    row = agg[agg["label"] == "smoe"].iloc[0]
    values = runs.loc[runs["variant"] == "smoe", "metrics/val/main/ppl"]
    assert row["n"] == 3 and row["mean"] == pytest.approx(values.mean()) and row["std"] == pytest.approx(values.std())
    assert row["seeds"] == "0 1 2"


def test_paired_differences_in_nats():
    runs = runs_frame(PAPER_ORDER)
    diff = paired_differences(runs, "val/main/ppl", "smoe", log=True).set_index("label")
    ppl = runs.set_index("run_id")["metrics/val/main/ppl"]
    expected = np.mean([np.log(ppl[f"mh3-{s}"] / ppl[f"smoe-{s}"]) for s in range(3)])
    assert diff.loc["mhmoe-h3", "delta"] == pytest.approx(expected)
    assert diff.loc["mhmoe-h3", "paired"] and diff.loc["mhmoe-h3", "ci_high"] < 0
    with pytest.raises(KeyError):
        paired_differences(runs, "val/main/ppl", "nope")


def test_coerce_param_turns_mlflow_text_into_values():
    assert coerce_param(pd.Series(["3", "4"])).dtype == "int64"
    assert coerce_param(pd.Series(["1.58", "16.0"])).tolist() == [1.58, 16.0]
    assert coerce_param(pd.Series(["None", "True", "False"])).tolist() == [None, True, False]
    assert coerce_param(pd.Series(["3", None])).dtype == "float64"
    assert coerce_param(pd.Series(["[0.9, 0.95]", "x"])).tolist() == ["[0.9, 0.95]", "x"]


def test_annotate_resolves_defaults_and_labels():
    runs = runs_frame({"smoe": 18.0, "mh2": 17.5, "mh2+nohm": 17.9, "smoe+w1.58": 30.0})
    by = runs.drop_duplicates("variant").set_index("variant")
    assert set(by.index) == {"smoe", "mhmoe-h2", "mhmoe-h2+nohead+nomerge", "smoe+w1.58"}
    assert by.loc["mhmoe-h2", "head_proj"] and not by.loc["smoe", "head_proj"]
    assert not by.loc["mhmoe-h2+nohead+nomerge", "merge_proj"]
    assert runs["point"].nunique() == 4  # seeds collapse into their point
    assert strip_seed("mhmoe-h2/seed=1") == "mhmoe-h2" and strip_seed("heads=2/seed=0/bits=16") == "heads=2/bits=16"


def test_val_sets_follow_the_configs_report_order():
    runs = runs_frame({"smoe": 18.0}, val_set="zeta").assign(**{"metrics/val/alpha/ppl": 1.0})
    assert val_sets(runs) == ["zeta", "alpha"]
    runs["params/data.val_sets"] = "['alpha', 'zeta=hf:x:y:validation']"
    assert val_sets(runs) == ["alpha", "zeta"]


def test_intervals_stay_inside_the_metrics_range_and_keep_their_coverage() -> None:
    # Two seeds of a load imbalance near its floor of 1: the t interval (df = 1) reaches far below 1.
    runs = pd.DataFrame({"point": ["p", "p"], "label": ["p", "p"], "seed": [0, 1], "run_id": ["a", "b"],
                         "status": ["FINISHED"] * 2, "metrics/routing/mean/load_imbalance": [1.02, 1.30],
                         "metrics/routing/mean/activation_ratio": [0.97, 0.70]})
    for column in GROUP_COLUMNS:
        if column not in runs:
            runs[column] = "x"
    agg = aggregate(runs).set_index("metric")
    raw = seed_stats([1.02, 1.30])
    assert raw.ci_low < 0  # what the report drew before: an imbalance of -0.6
    assert agg.loc["routing/mean/load_imbalance", "ci_low"] == 1.0
    assert agg.loc["routing/mean/load_imbalance", "ci_high"] == pytest.approx(raw.ci_high)
    assert agg.loc["routing/mean/activation_ratio", "ci_high"] == 1.0
    # Coverage of the clipped interval, seeded simulation: true mean 1.05 of skewed values >= 1, n = 2 and 3.
    rng = np.random.default_rng(0)
    for n in (2, 3):
        raw_stats = [seed_stats(row) for row in 1.0 + rng.gamma(shape=0.5, scale=0.1, size=(4000, n))]
        low, high = clip_to_range(np.array([s.ci_low for s in raw_stats]), np.array([s.ci_high for s in raw_stats]),
                                  "routing/mean/load_imbalance")
        assert low.min() >= 1.0 and (low > 1.0).any()
        covered = (low <= 1.05) & (1.05 <= high)
        unclipped = np.array([s.ci_low <= 1.05 <= s.ci_high for s in raw_stats])
        assert (covered == unclipped).all() and covered.mean() > 0.8  # clipping never loses the true mean
