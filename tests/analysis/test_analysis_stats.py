"""Seed statistics: bootstrap CIs, one-seed handling, aggregates and paired differences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.frame import coerce_param, strip_seed, val_sets
from analysis.stats import NO_CI, aggregate, mean_ci_columns, paired_differences, seed_stats
from tests.analysis.frames import PAPER_ORDER, runs_frame


def test_seed_stats_ci_brackets_the_mean():
    s = seed_stats([10.0, 10.4, 10.2])
    assert s.n == 3 and s.mean == pytest.approx(10.2) and s.std == pytest.approx(0.2)
    assert 10.0 <= s.ci_low < s.mean < s.ci_high <= 10.4
    assert seed_stats([10.0, 10.4, 10.2]) == s  # fixed generator: reproducible tables


def test_seed_stats_one_seed_and_degenerate():
    one = seed_stats([7.0, np.nan])
    assert one.n == 1 and one.mean == 7.0 and np.isnan(one.ci_low) and one.note == NO_CI
    same = seed_stats([3.0, 3.0])
    assert (same.ci_low, same.ci_high) == (3.0, 3.0)
    assert seed_stats([]).n == 0


def test_mean_ci_columns_matches_per_column_stats():
    m = np.array([[1.0, 2.0, 5.0], [1.2, 2.0, np.nan], [1.4, 2.0, 5.2]])
    out = mean_ci_columns(m)
    assert list(out["n"]) == [3, 3, 2]
    assert out["mean"].tolist() == pytest.approx([1.2, 2.0, 5.1])
    assert 1.0 <= out.loc[0, "ci_low"] < 1.2 < out.loc[0, "ci_high"] <= 1.4
    assert out.loc[1, "ci_low"] == out.loc[1, "ci_high"] == 2.0
    assert 5.0 <= out.loc[2, "ci_low"] <= out.loc[2, "ci_high"] <= 5.2


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
