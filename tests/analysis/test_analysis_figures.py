"""Figures a reviewer accepts: paper names and order, only independent axes, the points that exist,
FLOPs relative to the baseline, colour scales fitted to the data, every validation step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from analysis import fig_compute, fig_curves, fig_routing, fig_sweep
from analysis.frame import MissingData, points
from analysis.load import load_histories
from analysis.stats import aggregate
from analysis.style import paper_names
from tests.analysis.analysis_synthetic import STEPS
from tests.analysis.frames import runs_frame

PAPER_ROWS = ["Dense", "SMoE", "Fine-grained SMoE", "MH-MoE (head=2)", "MH-MoE (head=3)"]


def _ppl(runs: pd.DataFrame) -> pd.DataFrame:
    agg = aggregate(runs)
    return agg[agg["metric"] == "val/main/ppl"]


def _flop_matched() -> pd.DataFrame:
    """SMoE E=8, MH-MoE h=2 E=16, h=3 E=24: heads and experts change together, as FLOP matching does."""
    runs = runs_frame({"smoe": 18.0, "mh2": 17.5, "mh3": 17.2})
    runs["params/moe.num_experts"] = runs["params/moe.heads"] * 8
    return runs.assign(experts=runs["params/moe.num_experts"].where(runs["family"] != "dense"))


def test_paper_names_come_in_the_papers_order():
    runs = runs_frame({"mh3": 17.2, "fg": 17.7, "smoe+w1.58": 30.0, "dense": 20.0, "mh2": 17.5, "smoe": 18.0,
                       "mh2+nohm": 17.9})
    names = paper_names(points(runs))
    assert list(names.values()) == [*PAPER_ROWS, "SMoE, BitNet b1.58", "MH-MoE (head=2) w/o head & merge"]
    assert names["mhmoe-h2"] == "MH-MoE (head=2)" and names["fine_grained"] == "Fine-grained SMoE"


def test_axis_figure_leaves_out_axes_that_only_move_together():
    ppl = _ppl(_flop_matched())
    panels, skipped = fig_sweep.axis_panels(ppl)
    assert panels == []
    assert skipped[0].startswith("MH-MoE heads h: changes only together with experts per MoE layer E")
    assert skipped[1].startswith("experts per MoE layer E: changes only together with MH-MoE heads h")
    assert skipped[2] == "weight bits: one value in the sweep (16)"
    with pytest.raises(MissingData, match="no axis varies on its own"):
        fig_sweep.plot_axis_sweeps(ppl, "main")


def test_axis_figure_draws_an_axis_that_varies_alone():
    runs = runs_frame({"smoe": 18.0, "smoe+w1.58": 30.0, "mh2": 17.5, "mh3": 17.2})  # all E=8: heads alone
    panels, skipped = fig_sweep.axis_panels(_ppl(runs))
    assert [axis for axis, _ in panels] == ["heads", "weight_bits"]
    assert skipped == ["experts per MoE layer E: one value in the sweep (8)"]
    (heads_name, heads_line), = panels[0][1]
    assert heads_name == "MH-MoE, E=8" and list(heads_line["heads"]) == [2, 3]
    fig = fig_sweep.plot_axis_sweeps(_ppl(runs), "main")
    assert len(fig.axes) == 2 and fig.axes[0].get_legend().get_texts()[0].get_text() == "MH-MoE, E=8"


def test_heads_experts_draws_only_the_points_that_were_run():
    runs = runs_frame({"mh2": 17.5, "mh3": 17.2, "mh2+e32": 17.1}, seeds=(0, 1))
    e32 = runs["run_id"].str.startswith("mh2+e32")
    runs.loc[e32, "params/moe.num_experts"] = 32
    runs = runs.assign(experts=runs["params/moe.num_experts"], point=np.where(e32, "mh2-e32", runs["point"]))
    fig = fig_sweep.plot_heads_experts(_ppl(runs), "main")
    scatter = fig.axes[0].collections[0]
    assert len(scatter.get_offsets()) == 3  # 2 heads x 2 expert counts, one combination not run: 3 marks
    assert fig_sweep.grid_points(_ppl(_flop_matched())) is None  # a diagonal is not a grid
    with pytest.raises(MissingData, match="no variant family has 3"):
        fig_sweep.plot_heads_experts(_ppl(_flop_matched()), "main")


def test_flops_are_shown_relative_to_the_baseline_in_percent():
    runs = runs_frame({"dense": 20.0, "smoe": 18.0, "mh2": 17.5})
    runs["params/budget.train_flops_per_token"] = runs["family"].map({"dense": 0.9e6, "smoe": 1e6, "mhmoe": 1.02e6})
    data = fig_compute.flops_frame(runs, aggregate(runs), "main").set_index("label")
    assert data["flops_pct"].to_dict() == pytest.approx({"dense": -10.0, "smoe": 0.0, "mhmoe-h2": 2.0})
    assert set(data["baseline"]) == {"SMoE"}
    fig = fig_compute.plot_ppl_vs_flops(data.reset_index(), "main")
    low, high = fig.axes[0].get_xlim()
    assert low < -10 and high > fig_compute.MIN_SPAN_PCT  # a 2% gap is drawn as 2% of a 15% span
    assert fig.axes[0].get_xlabel() == "training FLOPs per token vs SMoE"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["Dense", "SMoE", "MH-MoE (head=2)"]


def test_expert_load_colour_scale_is_fitted_to_the_data_and_symmetric_in_log():
    shares = {"smoe": np.array([[0.5, 1.0, 1.5], [0.8, 1.2, 1.0]]), "mhmoe-h2": np.array([[0.0, 1.9, 1.1]])}
    assert fig_routing.load_span(shares) == pytest.approx(1.0)  # |log2 0.5|; the unused expert (0) is left out
    fig = fig_routing.plot_expert_load(shares, {"smoe": "SMoE", "mhmoe-h2": "MH-MoE (head=2)"})
    image = fig.axes[0].images[0]
    assert image.norm.vmin == pytest.approx(-1.0) and image.norm.vmax == pytest.approx(1.0)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["SMoE", "MH-MoE (head=2)"]
    labels = [t.get_text() for t in fig.axes[-1].get_yticklabels()]
    assert labels == ["0.5", "0.71", "1", "1.4", "2"]
    assert fig_routing.load_span({"a": np.ones((2, 4))}) == fig_routing.MIN_LOAD_SPAN


def test_val_curves_mark_every_validation_step_in_paper_order(store, synth_runs):
    histories = load_histories(synth_runs[synth_runs["status"] == "FINISHED"], fig_curves.history_keys(synth_runs),
                               store["uri"])
    fig = fig_curves.plot_val_curves(synth_runs, histories)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert all(len(line.get_xdata()) == len(STEPS) for line in lines.values())
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:6] == ["Dense", "SMoE", "Fine-grained SMoE", "MH-MoE (head=2), E=16", "MH-MoE (head=2), E=32",
                          "MH-MoE (head=3)"]
    assert to_hex(lines["Dense"].get_color()) == "#000000"
