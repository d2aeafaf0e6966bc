"""The report's figures are a registry: a new figure is one ``fig_*`` module; any grid axis gets a figure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import analysis
from analysis import fig_sweep, figures
from analysis.frame import MissingData
from analysis.report import Outputs, write_figures
from analysis.stats import aggregate
from mhmoe.commands.report import sweep_ref
from tests.analysis.frames import runs_frame

EXTRA_MODULE = '''
from matplotlib.figure import Figure

from analysis.figures import FigureEntry
from analysis.frame import MissingData


def draw(inputs):
    tokens = inputs.histories[inputs.histories["key"] == "val/tokens"]
    fig = Figure(figsize=(3.3, 2.0))
    fig.add_subplot().plot(tokens["step"], tokens["value"], ".")
    return fig


def never(inputs):
    raise MissingData("nothing to show")


FIGURES = [
    FigureEntry("tokens_seen", place=2.5, history_keys=lambda runs: ["val/tokens"], draw=draw,
                caption=lambda i: f"{len(i.histories[i.histories['key'] == 'val/tokens'])} token counts"),
    FigureEntry("never_drawn", place=9, draw=never, caption=lambda i: "unused"),
]
'''
PAPER_FIGURES = ["val_curves", "axis_sweeps", "heads_experts", "expert_load", "routing_stats", "bitnet_gap",
                 "ppl_vs_flops"]


def test_the_registry_lists_the_papers_figures_in_their_order() -> None:
    entries = figures.registered()
    assert [e.name for e in entries if e.axes is None] == PAPER_FIGURES
    assert [e.name for e in entries if e.axes is not None] == ["axis"]


def test_a_new_figure_is_one_module_with_its_entry(store: dict, synth_runs: pd.DataFrame, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fig_extra.py").write_text(EXTRA_MODULE)
    monkeypatch.setattr(analysis, "__path__", [*analysis.__path__, str(tmp_path)])
    entries = figures.registered()
    assert [e.name for e in entries if e.axes is None] == [*PAPER_FIGURES[:3], "tokens_seen", *PAPER_FIGURES[3:],
                                                           "never_drawn"]
    monkeypatch.setattr(analysis, "__path__", [str(tmp_path)])  # draw only the new module's (fast)
    out = Outputs(tmp_path / "out", "synth__")
    write_figures(out, synth_runs, aggregate(synth_runs), "shakespeare", store["uri"])
    assert [stem for stem, _, _ in out.figures] == ["tokens_seen"]
    assert int(out.figures[0][1].split()[0]) > 0  # the caption counts the history it asked for: it was loaded
    assert (tmp_path / "out" / "synth__tokens_seen.png").stat().st_size > 0
    assert out.skipped == ["figure `never_drawn` skipped: nothing to show"]


def _aux_coef_sweep() -> pd.DataFrame:
    low = runs_frame({"smoe": 18.0, "mh2": 17.5}, **{"moe.aux_loss_coef": 0.001, "moe.top_k": 2})
    high = runs_frame({"smoe": 18.4, "mh2": 17.6}, **{"moe.aux_loss_coef": 0.1, "moe.top_k": 2})
    high["run_id"] = high["run_id"] + "-high"
    from analysis.frame import annotate

    return annotate(pd.concat([low, high], ignore_index=True))


def test_any_grid_axis_with_two_values_gets_its_figure() -> None:
    runs = _aux_coef_sweep()
    keys = ("seed", "moe.heads", "moe.top_k", "moe.aux_loss_coef", "moe.z_loss_coef")
    assert fig_sweep.grid_axes(runs, keys) == ["moe.aux_loss_coef"]  # heads: axis_sweeps; top_k: one value
    agg = aggregate(runs)
    ppl = agg[agg["metric"] == "val/main/ppl"]
    lines = fig_sweep.grid_axis_lines(runs, ppl, "moe.aux_loss_coef")
    assert [name for name, _ in lines] == ["SMoE, E=8", "MH-MoE (head=2), E=8"]
    for _, g in lines:
        assert g["x"].tolist() == [0.001, 0.1] and g["value"].tolist() == ["0.001", "0.1"]
    assert lines[0][1]["mean"].iloc[1] == pytest.approx(18.4, rel=0.01)
    fig = fig_sweep.plot_grid_axis(runs, ppl, "moe.aux_loss_coef", "main")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "load-balancing loss coefficient" and ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.001", "0.1"]
    entry = next(e for e in figures.registered() if e.name == "axis")
    inputs = figures.FigureInputs(runs, agg, "main", "unused", grid_axes=keys)
    assert [stem for stem, _ in entry.instances(inputs)] == ["axis_moe.aux_loss_coef"]
    with pytest.raises(MissingData, match="no two points differ only in it"):
        fig_sweep.plot_grid_axis(runs[runs["family"] == "smoe"].iloc[:3], ppl.iloc[:1], "moe.aux_loss_coef", "main")


def test_the_report_takes_its_axes_from_the_specs_grid(tmp_path: Path) -> None:
    spec = tmp_path / "coef.yaml"
    spec.write_text("name: coef\nbase: {preset: debug}\nbudget: {steps: 5}\n"
                    "grid: {moe.aux_loss_coef: [0.001, 0.01], seed: [0, 1]}\n")
    assert sweep_ref(spec).grid_axes == ("moe.aux_loss_coef", "seed")
