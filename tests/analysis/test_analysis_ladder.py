"""The token-budget ladder on a hand-built sweep whose true trend is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import ladder
from analysis.frame import annotate
from tests.analysis.frames import runs_frame

BUDGETS = (3e5, 1e6, 3e6)
SLOPE = 0.02  # nats per decade: MH-MoE h=3 gains on SMoE as tokens grow
AT_FIRST = -0.03  # and starts behind it


def ladder_runs(budgets=BUDGETS, seeds=(0, 1, 2)) -> pd.DataFrame:
    frames = []
    rng = np.random.default_rng(0)
    seed_effect = {s: rng.normal(0, 0.05) for s in seeds}  # shared by both variants: pairing cancels it
    for tokens in budgets:
        true_delta = AT_FIRST + SLOPE * np.log10(tokens / budgets[0])
        for seed in seeds:
            base = 40.0 * np.exp(seed_effect[seed] - 0.1 * np.log10(tokens))
            noise = rng.normal(0, 0.002)
            frame = runs_frame({"smoe": base, "mh3": base * np.exp(-(true_delta + noise))}, seeds=(seed,), noise=0.0,
                               **{"train.max_steps": int(tokens / 1024), "train.batch_size": 4, "train.seq_len": 256})
            frames.append(frame.assign(run_id=frame["run_id"] + f"-{tokens:g}"))
    return annotate(pd.concat(frames, ignore_index=True))  # as load_runs does: one frame for the sweep


def test_deltas_per_rung_are_paired_and_the_trend_recovers_the_truth() -> None:
    runs = ladder_runs()
    assert ladder.rungs(runs) == [int(t / 1024) * 1024 for t in BUDGETS]
    assert any("max_steps" in label for label in runs["label"])  # across rungs the budget tells points apart
    assert not any("max_steps" in label for label in ladder.at_rung(runs, ladder.rungs(runs)[-1])["label"])
    deltas = ladder.ladder_deltas(runs, "main")
    assert list(deltas["name"].unique()) == ["MH-MoE (head=3)"] and len(deltas) == 3
    assert deltas["paired"].all() and (deltas["n_a"] == 3).all()
    first, last = deltas.sort_values("tokens").iloc[[0, -1]]["delta"]
    assert first == pytest.approx(AT_FIRST, abs=0.005) and last == pytest.approx(AT_FIRST + SLOPE, abs=0.005)

    (fit,) = ladder.trend(deltas).to_dict("records")
    assert fit["slope"] == pytest.approx(SLOPE, abs=0.004) and fit["slope_resolved"]
    true_crossing = BUDGETS[0] * 10 ** (-AT_FIRST / SLOPE)
    assert fit["crossover_low"] < true_crossing < fit["crossover_high"]
    assert fit["extrapolated"]  # ~9.5M tokens lies past the 3M rung
    (line,) = ladder.summary_lines(deltas, ladder.trend(deltas))
    assert "MH-MoE (head=3) vs SMoE" in line and "an extrapolation beyond the budgets run" in line
    assert "n = 3 seeds" in line and "Student-t" in line
    assert line.count("] resolved") == 3  # each rung says resolved (or within noise)
    assert ladder.plot_ladder(deltas, ladder.trend(deltas), "main").axes[0].get_xscale() == "log"


def test_two_budgets_give_deltas_but_no_trend() -> None:
    deltas = ladder.ladder_deltas(ladder_runs(budgets=BUDGETS[:2]), "main")
    assert len(deltas) == 2 and ladder.trend(deltas).empty
    (line,) = ladder.summary_lines(deltas, ladder.trend(deltas))
    assert "No trend is fitted with fewer than 3 budgets" in line


def test_a_flat_ladder_claims_no_crossover() -> None:
    runs = ladder_runs()
    # Same truth at every budget: the slope's interval covers zero, so no crossing is reported.
    flat = runs.copy()
    for tokens in ladder.rungs(runs):
        smoe = flat[(flat["tokens"] == tokens) & (flat["family"] == "smoe")].set_index("seed")["metrics/val/main/ppl"]
        rows = (flat["tokens"] == tokens) & (flat["family"] == "mhmoe")
        flat.loc[rows, "metrics/val/main/ppl"] = [smoe[s] * np.exp(0.01 + 0.003 * ((s * 7 + tokens) % 3 - 1))
                                                   for s in flat.loc[rows, "seed"]]
    (fit,) = ladder.trend(ladder.ladder_deltas(flat, "main")).to_dict("records")
    assert not fit["slope_resolved"] and np.isnan(fit["crossover_tokens"])
