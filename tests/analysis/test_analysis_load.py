"""load_runs / load_histories / load_routing_arrays against a real sqlite MLflow store."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.load import find_parent_run, load_histories, load_routing_arrays, load_runs
from tests.analysis.analysis_synthetic import ONESEED, STEPS, SYNTH, TOKENS_PER_STEP, final_ppl, load_counts


def test_one_row_per_trial_with_typed_params(store, synth_runs):
    runs = synth_runs
    assert len(runs) == sum(len(p.seeds) for p in SYNTH) + 1  # + the failed run; the parent is not a trial
    assert set(runs["run_id"]) == set(store["synth"]["trial"] + store["synth"]["failed"])
    assert runs["params/moe.heads"].dtype == "int64"
    assert runs["params/quant.weight_bits"].dtype == "float64"
    assert runs["params/budget.train_flops_per_token"].max() == 1.1e6  # "1100000.0" -> a number
    assert set(runs["params/moe.head_proj"].dropna()) == {False}  # "None" -> missing, "False" -> False
    assert (runs["status"] == "FAILED").sum() == 1
    assert runs.attrs["tracking_uri"] == store["uri"]


def test_grouping_columns(synth_runs):
    runs = synth_runs[synth_runs["status"] == "FINISHED"]
    assert runs["point"].nunique() == len(SYNTH)
    assert set(runs["label"]) == {"dense", "smoe", "fine_grained", "mhmoe-h2 E=16", "mhmoe-h2 E=32", "mhmoe-h3",
                                  "mhmoe-h2+nohead+nomerge", "smoe+w1.58", "mhmoe-h2+w1.58"}
    mh = runs[runs["label"] == "mhmoe-h2 E=16"].iloc[0]
    assert mh["head_proj"] and mh["merge_proj"] and mh["heads"] == 2 and mh["paper_model"] == "MH-MoE (head=2)"
    assert runs.loc[runs["variant"] == "smoe+w1.58", "weight_bits"].eq(1.58).all()


def test_final_metrics_are_the_last_logged_values(synth_runs):
    smoe = SYNTH[1]
    row = synth_runs[(synth_runs["label"] == "smoe") & (synth_runs["seed"] == 1)].iloc[0]
    assert row["metrics/val/shakespeare/ppl"] == pytest.approx(final_ppl(smoe, 1, "shakespeare"))
    assert row["metrics/val/pydoc/ppl"] == pytest.approx(final_ppl(smoe, 1, "pydoc"))


def test_histories_long_frame(synth_runs):
    runs = synth_runs.head(2)
    hist = load_histories(runs, ["val/shakespeare/ppl", "val/tokens"])
    assert list(hist.columns) == ["run_id", "key", "step", "value", "timestamp"]
    assert len(hist) == 2 * 2 * len(STEPS)
    tokens = hist[hist["key"] == "val/tokens"]
    assert (tokens["value"] == tokens["step"] * TOKENS_PER_STEP).all()


def test_routing_arrays_use_the_last_step(synth_runs):
    runs = synth_runs[synth_runs["label"].isin(["mhmoe-h3", "dense"]) & (synth_runs["status"] == "FINISHED")]
    loads = load_routing_arrays(runs, "load")
    h3 = runs[runs["label"] == "mhmoe-h3"]
    assert set(loads) == set(h3["run_id"])  # dense runs have no artifact
    for _, r in h3.iterrows():
        step, array = loads[r["run_id"]]
        assert step == STEPS[-1]
        np.testing.assert_array_equal(array, load_counts(SYNTH[5], int(r["seed"])))
    div = load_routing_arrays(h3, "divergence")
    assert all(a.shape == (2, 3) for _, a in div.values())


def test_point_falls_back_to_a_param_hash_and_parent_lookup(store):
    runs = load_runs("oneseed", store["uri"])
    assert len(runs) == len(ONESEED) and runs["point"].str.startswith("p").all()
    assert find_parent_run("oneseed", store["uri"]) is None
    assert find_parent_run("synth", store["uri"]) == store["synth"]["parent"][0]
    assert load_runs("no-such-sweep", store["uri"]).empty
