"""Figure 1: validation perplexity vs training tokens, one panel per validation set.

Every logged validation step is a point of the curve (no thinning): a curve with few
validation steps shows its few markers rather than a smooth line that is not there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from analysis.figures import FigureEntry, FigureInputs
from analysis.frame import MissingData, col, finished, points, val_sets
from analysis.stats import clip_to_range, mean_ci_columns
from analysis.style import DOUBLE, SINGLE, figure, line_styles, paper_names, plain_log_ticks, styled
from mhmoe.tracking import names

TOKENS_KEY = "val/tokens"


def history_keys(runs: pd.DataFrame) -> list[str]:
    """Metric histories the curves need."""
    return [names.val_metric(s, "ppl") for s in val_sets(runs)] + [TOKENS_KEY]


def curve_frame(runs: pd.DataFrame, histories: pd.DataFrame, val_set: str) -> tuple[pd.DataFrame, str]:
    """Long frame (run_id, point, label, step, x, ppl) and the x-axis name.

    x is ``val/tokens`` when every run logged it, else step x batch_size x seq_len when the params
    are there, else the step.
    """
    runs = finished(runs)
    key = names.val_metric(val_set, "ppl")
    h = histories[(histories["key"] == key) & histories["run_id"].isin(runs["run_id"])]
    ppl = h.groupby(["run_id", "step"], as_index=False)["value"].last().rename(columns={"value": "ppl"})
    tokens = histories[histories["key"] == TOKENS_KEY].groupby(["run_id", "step"])["value"].last()
    frame = ppl.merge(runs[["run_id", "point", "label"]], on="run_id")
    frame["x"] = [tokens.get((r, s), np.nan) for r, s in zip(frame["run_id"], frame["step"])]
    if len(frame) and frame["x"].notna().all():
        return frame, "training tokens"
    per_step = _tokens_per_step(runs)
    if per_step is not None:
        frame["x"] = frame["step"] * frame["run_id"].map(per_step)
        if frame["x"].notna().all():
            return frame, "training tokens"
    frame["x"] = frame["step"].astype(float)
    return frame, "step"


def _tokens_per_step(runs: pd.DataFrame) -> pd.Series | None:
    b, t = col("train.batch_size"), col("train.seq_len")
    if b not in runs.columns or t not in runs.columns:
        return None
    return (pd.to_numeric(runs[b], errors="coerce") * pd.to_numeric(runs[t], errors="coerce")).set_axis(runs["run_id"])


def point_curve(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and CI across seeds at each step of one point: columns step, x, n, mean, ci_low, ci_high."""
    wide = frame.pivot_table(index="run_id", columns="step", values="ppl")
    x = frame.groupby("step")["x"].mean().reindex(wide.columns)
    stats = mean_ci_columns(wide.to_numpy())
    low, high = clip_to_range(stats["ci_low"], stats["ci_high"], "ppl")
    return stats.assign(step=wide.columns.to_numpy(), x=x.to_numpy(), ci_low=low, ci_high=high)


@styled
def plot_val_curves(runs: pd.DataFrame, histories: pd.DataFrame) -> Figure:
    """Mean validation perplexity (line, a marker per validation step) and 95% CI band across seeds,
    per variant (paper names and order) and set."""
    sets = val_sets(runs)
    if not sets or histories.empty:
        raise MissingData("no val/<set>/ppl histories")
    pts = points(runs)
    styles = line_styles(pts)
    shown = paper_names(pts)
    width = SINGLE if len(sets) == 1 else DOUBLE
    fig, axes = figure(width, 2.3 + 0.12 * ((len(pts) + 3) // 4), ncols=len(sets), sharex=False)
    drawn = 0
    for ax, val_set in zip(axes[0], sets):
        frame, xname = curve_frame(runs, histories, val_set)
        for label, name in shown.items():
            group = frame[frame["label"] == label]
            if group.empty:
                continue
            c = point_curve(group)
            style = styles[label]
            ax.plot(c["x"], c["mean"], label=name, color=style["color"], linestyle=style["linestyle"],
                    marker=style["marker"], markersize=2.5)
            band = c["ci_low"].notna()
            ax.fill_between(c.loc[band, "x"], c.loc[band, "ci_low"], c.loc[band, "ci_high"],
                            color=style["color"], alpha=0.18, linewidth=0)
            drawn += 1
        ax.set_title(val_set)
        ax.set_xlabel(xname)
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
        if xname == "training tokens":
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    if not drawn:
        raise MissingData("histories hold no val/<set>/ppl values for finished runs")
    axes[0][0].set_ylabel("validation perplexity")
    legend: dict[str, Artist] = {}
    for ax in axes[0]:  # union over panels: a set may lack some variants
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    legend = {name: legend[name] for name in shown.values() if name in legend}  # paper order
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncol=min(4, len(legend)))
    return fig


def _draw(inputs: FigureInputs) -> Figure:
    inputs.need_set()
    return plot_val_curves(inputs.runs, inputs.histories)


FIGURES = [
    FigureEntry(
        "val_curves", place=1, history_keys=history_keys, draw=_draw,
        caption=lambda i: "Validation perplexity vs training tokens at every validation step: mean over "
                          f"seeds, band: {i.ci} (n can drop at steps some seeds did not log)"),
]
