"""Figure 2: final perplexity along the sweep axes (heads, experts, weight bits) and over heads x experts.

An axis gets a panel only where it varies on its own: two points of one variant family that
differ in that axis and agree on the other two. The budget solver changes heads and experts
together to match FLOPs, so two FLOP-matched MH-MoE points are one comparison, not a heads trend
and an experts trend; :func:`axis_panels` says which axes were left out and why. The heads x
experts figure draws the points that exist (no heatmap with empty cells).
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from analysis.frame import FAMILY_NAMES, MissingData, model_name
from analysis.style import DOUBLE, SEQUENTIAL_CMAP, SINGLE, figure, line_styles, modifier_text, paper_sort_key, styled
from mhmoe.variants import multi_head

AXES = {"heads": "MH-MoE heads h", "experts": "experts per MoE layer E", "weight_bits": "weight bits"}
_FAMILY = ["family", "shared", "head_proj", "merge_proj"]
MIN_GRID_POINTS = 3  # fewer points over heads x experts lie on one line: nothing a 2-D figure adds


def _line_name(row: pd.Series, axis: str) -> str:
    """The paper name of a line's points without the coordinate the line varies."""
    if multi_head(row["family"]) and axis == "heads":
        name = FAMILY_NAMES[row["family"]]
    else:
        name = model_name(row["family"], row["heads"]) or str(row["variant"])
    name += modifier_text(row, bits=axis != "weight_bits")
    if axis != "experts" and pd.notna(row["experts"]):
        name += f", E={row['experts']:g}"
    return name


def axis_lines(agg: pd.DataFrame, axis: str) -> list[tuple[str, pd.DataFrame]]:
    """Lines along ``axis``: points of one family that differ only in ``axis`` (the other axes fixed)."""
    others = [a for a in AXES if a != axis]
    data = agg.dropna(subset=[axis, "mean"])
    lines = []
    for _, g in data.groupby(_FAMILY + others, dropna=False, sort=False):
        g = g.drop_duplicates(axis)  # two points at one x (a different top_k, say) would zigzag
        if g[axis].nunique() >= 2:
            lines.append(g.sort_values(axis))
    firsts = [g.sort_values("weight_bits").iloc[-1] for g in lines]  # the full-precision member names a line
    order = sorted(range(len(lines)), key=lambda i: paper_sort_key(firsts[i]))
    return [(_line_name(firsts[i], axis), lines[i]) for i in order]


def _why_not(agg: pd.DataFrame, axis: str) -> str:
    data = agg.dropna(subset=[axis, "mean"])
    values = sorted(data[axis].unique())
    if len(values) < 2:
        shown = f"{values[0]:g}" if values else "none"
        return f"{AXES[axis]}: one value in the sweep ({shown})"
    moved = set()
    for _, g in data.groupby(_FAMILY, dropna=False):
        if g[axis].nunique() >= 2:
            moved |= {o for o in AXES if o != axis and g[o].nunique() >= 2}
    if not moved:
        return f"{AXES[axis]}: differs only between variant families, never within one"
    return (f"{AXES[axis]}: changes only together with " + " and ".join(AXES[o] for o in sorted(moved))
            + " (e.g. by FLOP matching), never on its own")


def axis_panels(agg: pd.DataFrame) -> tuple[list[tuple[str, list]], list[str]]:
    """The axes that vary independently, with their lines, and one reason per axis left out."""
    panels, skipped = [], []
    for axis in AXES:
        lines = axis_lines(agg, axis)
        if lines:
            panels.append((axis, lines))
        else:
            skipped.append(_why_not(agg, axis))
    return panels, skipped


@styled
def plot_axis_sweeps(agg: pd.DataFrame, val_set: str, interval: str = "95% CI") -> Figure:
    """One panel per independent axis: final perplexity (mean, error bars = ``interval``), a line
    per family. ``agg`` is :func:`analysis.stats.aggregate` output filtered to one metric."""
    panels, skipped = axis_panels(agg)
    if not panels:
        raise MissingData("no axis varies on its own: " + "; ".join(skipped))
    fig, axes = figure(SINGLE if len(panels) == 1 else DOUBLE, 2.5, ncols=len(panels))
    styles = line_styles(agg.drop_duplicates("label"))
    for ax, (axis, lines) in zip(axes[0], panels):
        for name, g in lines:
            # colour of the line's full-precision member (a bits line mixes both)
            style = styles[g.sort_values("weight_bits").iloc[-1]["label"]]
            err = np.vstack([g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]])
            ax.errorbar(g[axis], g["mean"], yerr=np.where(np.isfinite(err), err, 0), label=name,
                        color=style["color"], marker=style["marker"])
        ax.set_xlabel(AXES[axis])
        if axis in ("experts", "weight_bits"):
            ax.set_xscale("log", base=2)
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(sorted({x for _, g in lines for x in g[axis]}))
        ax.set_xticklabels([f"{x:g}" for x in sorted({x for _, g in lines for x in g[axis]})])
        ax.legend()
    axes[0][0].set_ylabel(f"final perplexity ({val_set})")
    return fig


def grid_points(agg: pd.DataFrame) -> tuple[str, pd.DataFrame] | None:
    """The family (same modifiers and bits) with the most points over heads x experts, when it has
    2+ heads, 2+ expert counts and :data:`MIN_GRID_POINTS`+ points: (name, its points)."""
    best = None
    for _, g in agg.dropna(subset=["heads", "experts", "mean"]).groupby([*_FAMILY, "weight_bits"], sort=True):
        g = g.drop_duplicates(["heads", "experts"])
        if (g["heads"].nunique() >= 2 and g["experts"].nunique() >= 2 and len(g) >= MIN_GRID_POINTS
                and (best is None or len(g) > len(best))):
            best = g
    if best is None:
        return None
    first = best.iloc[0]
    return _line_name(first, "heads").split(", E=")[0], best


def why_no_grid(agg: pd.DataFrame) -> str:
    return (f"no variant family has {MIN_GRID_POINTS}+ points over 2+ head counts and 2+ expert counts "
            "(points that change heads and experts together lie on one line)")


@styled
def plot_heads_experts(agg: pd.DataFrame, val_set: str) -> Figure:
    """Final perplexity at each (experts, heads) point that was run, as coloured squares with the value
    printed; combinations not run stay empty background, not empty heatmap cells."""
    found = grid_points(agg)
    if found is None:
        raise MissingData(why_no_grid(agg))
    name, pts = found
    heads, experts = sorted(pts["heads"].unique()), sorted(pts["experts"].unique())
    fig, axes = figure(SINGLE, 0.9 + 0.32 * max(len(heads), 2))
    ax = axes[0][0]
    x = pts["experts"].map(experts.index).to_numpy()
    y = pts["heads"].map(heads.index).to_numpy()
    norm = Normalize(pts["mean"].min(), pts["mean"].max())
    cmap = mpl.colormaps[SEQUENTIAL_CMAP]
    image = ax.scatter(x, y, c=pts["mean"], cmap=cmap, norm=norm, marker="s", s=260, edgecolor="white", zorder=2)
    for xi, yi, v in zip(x, y, pts["mean"]):
        ax.text(xi, yi, f"{v:.2f}", ha="center", va="center", fontsize=5.5, zorder=3,
                color="white" if norm(v) < 0.5 else "black")
    ax.set_xticks(range(len(experts)), [f"{e:g}" for e in experts])
    ax.set_yticks(range(len(heads)), [f"{h:g}" for h in heads])
    ax.set_xlim(-0.6, len(experts) - 0.4)
    ax.set_ylim(-0.6, len(heads) - 0.4)
    ax.set_xlabel("experts per MoE layer E")
    ax.set_ylabel("heads h")
    ax.set_title(f"{name}: final perplexity ({val_set}), points run")
    fig.colorbar(image, ax=ax, label="perplexity")
    return fig
