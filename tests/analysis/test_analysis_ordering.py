"""The ordering check on frames whose ordering is known: agree, disagree, noise, one seed, not run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.frame import annotate
from analysis.index import Para
from analysis.ordering import check_ordering, paper_comparisons
from analysis.report_index import summary_blocks
from analysis.stats import seeds_needed
from tests.analysis.frames import PAPER_ORDER, runs_frame


def _row(result, worse: str, better: str, table: str = "T1"):
    hit = result[(result["table"] == table) & (result["worse"] == worse) & (result["better"] == better)]
    assert len(hit) == 1, f"no single {table} comparison {worse} > {better}"
    return hit.iloc[0]


def test_paper_comparisons_cover_section_8():
    comps = paper_comparisons()
    dense = _row(comps, "Dense", "SMoE")
    assert dense["paper_delta"] == pytest.approx(np.log(12.13 / 10.90))  # v2 Table 1, 100k steps, RedPajama: +0.107
    assert _row(comps, "SMoE", "MH-MoE (head=3)")["paper_delta"] == pytest.approx(0.036, abs=5e-4)
    assert _row(comps, "Fine-grained SMoE", "MH-MoE (head=2)")["paper_delta"] == pytest.approx(0.0037, abs=1e-4)
    t5 = comps[comps["table"] == "T5"]
    assert list(zip(t5["worse"], t5["better"])) == [
        ("MH-MoE (head=2), neither", "MH-MoE (head=2), merge only"),
        ("MH-MoE (head=2), merge only", "MH-MoE (head=2), head only"),
        ("MH-MoE (head=2), head only", "MH-MoE (head=2), head + merge"),
    ]
    assert (comps["paper_delta"] > 0).all()


def test_agreeing_ordering_is_resolved_and_delta_is_paired_log_difference():
    runs = runs_frame(PAPER_ORDER)
    result = check_ordering(runs)
    t1 = result[result["table"] == "T1"]
    assert len(t1) == 6 and (t1["verdict"] == "agrees").all()
    assert t1["agrees"].all() and t1["outside_ci"].all() and t1["paired"].all()
    row = _row(result, "Dense", "SMoE")
    ppl = runs.set_index("run_id")["metrics/val/main/ppl"]
    expected = np.mean([np.log(ppl[f"dense-{s}"] / ppl[f"smoe-{s}"]) for s in range(3)])
    assert row["delta"] == pytest.approx(expected)
    assert row["ci_low"] < row["delta"] < row["ci_high"]
    assert row["worse_label"] == "dense" and row["better_label"] == "smoe"
    assert row["val_set"] == "main"


def test_reversed_pair_disagrees_outside_ci():
    runs = runs_frame({**PAPER_ORDER, "mh3": 19.0})  # MH-MoE h=3 now worse than SMoE
    row = _row(check_ordering(runs), "SMoE", "MH-MoE (head=3)")
    assert row["verdict"] == "disagrees"
    assert row["delta"] == pytest.approx(np.log(18.0 / 19.0), abs=0.01)
    assert not row["agrees"] and row["outside_ci"] and not row["paper_in_ci"]


def test_tie_within_seed_noise():
    runs = runs_frame({**PAPER_ORDER, "fg": 17.5}, noise=0.0)  # FG == MH2, then +-1% seed noise on FG
    fg = runs["variant"] == "fine_grained"
    runs.loc[fg, "metrics/val/main/ppl"] *= np.array([1.01, 0.99, 1.0])
    row = _row(check_ordering(runs), "Fine-grained SMoE", "MH-MoE (head=2)")
    assert row["verdict"].endswith("within noise")
    assert row["ci_low"] < 0 < row["ci_high"]


def test_one_seed_gives_no_ci_instead_of_failing():
    row = _row(check_ordering(runs_frame(PAPER_ORDER, seeds=(0,))), "Dense", "SMoE")
    assert row["verdict"] == "agrees, within noise (no CI)" and not row["resolved"]
    assert np.isnan(row["ci_low"]) and pd.isna(row["paper_in_ci"]) and np.isnan(row["seeds_needed"])


def test_two_seeds_never_resolve_even_outside_the_ci():
    row = _row(check_ordering(runs_frame(PAPER_ORDER, seeds=(0, 1))), "Dense", "SMoE")
    assert row["outside_ci"] and not row["resolved"] and row["method"] == "t"
    assert row["verdict"] == "agrees, within noise (2 seeds)"


def test_seeds_needed_follow_the_observed_paired_sd():
    runs = runs_frame(PAPER_ORDER, seeds=(0, 1, 2, 3), noise=0.01)
    row = _row(check_ordering(runs), "SMoE", "MH-MoE (head=2)")
    ppl = runs.set_index("run_id")["metrics/val/main/ppl"]
    sd = np.std([np.log(ppl[f"smoe-{s}"] / ppl[f"mh2-{s}"]) for s in range(4)], ddof=1)
    assert row["sd"] == pytest.approx(sd)
    assert row["seeds_needed"] == seeds_needed(sd, row["paper_delta"])
    assert row["seeds_needed_power"] == seeds_needed(sd, row["paper_delta"], power=0.8) >= row["seeds_needed"]


def test_missing_variants_and_failed_runs_are_not_run():
    runs = runs_frame({"smoe": 18.0, "mh2": 17.5, "dense": 20.0}, status={"dense": "FAILED"})
    result = check_ordering(runs)
    assert _row(result, "Dense", "SMoE")["verdict"] == "not run: Dense"
    assert _row(result, "SMoE", "MH-MoE (head=2)")["verdict"] == "agrees"
    assert _row(result, "SMoE", "Fine-grained SMoE", "T2")["verdict"].startswith("not run")


def test_unpaired_seeds_use_welch_t():
    a = runs_frame({"smoe": 18.0}, seeds=(0, 1, 2))
    b = runs_frame({"mh3": 17.0}, seeds=(5, 6, 7))
    row = _row(check_ordering(annotate(pd.concat([a, b], ignore_index=True))), "SMoE", "MH-MoE (head=3)")
    assert row["verdict"] == "agrees" and not row["paired"] and row["method"] == "t"
    assert row["n_worse"] == 3 and row["n_better"] == 3


def test_a_sweep_with_one_variant_says_no_comparison_is_checkable():
    result = check_ordering(runs_frame({"dense": PAPER_ORDER["dense"]}))
    assert len(result) and result["delta"].isna().all()
    [para] = summary_blocks(result)
    assert isinstance(para, Para) and para.text.startswith(f"None of the {len(result)} comparisons")
