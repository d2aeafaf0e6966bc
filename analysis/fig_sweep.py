"""Figure 2: final perplexity along the sweep axes (heads, experts, weight bits), over heads x experts,
and along every other grid axis of the spec (``moe.aux_loss_coef``, say), one figure each.

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

from analysis.figures import FigureEntry, FigureInputs
from analysis.frame import FAMILY_NAMES, MissingData, col, config_columns, finished, model_name, row_text
from analysis.stats import seed_count
from analysis.style import DOUBLE, SEQUENTIAL_CMAP, SINGLE, figure, line_styles, modifier_text, paper_sort_key, styled
from mhmoe.config.variants import multi_head

AXES = {"heads": "MH-MoE heads h", "experts": "experts per MoE layer E", "weight_bits": "weight bits"}
"""The axes ``axis_sweeps`` draws together (frame columns), with their labels."""
GRID_COLUMNS = {"moe.heads": "heads", "moe.num_experts": "experts", "quant.weight_bits": "weight_bits"}
"""The grid keys of :data:`AXES`: a spec's other grid keys each get a figure of their own."""
AXIS_LABELS = {**{key: AXES[column] for key, column in GRID_COLUMNS.items()},
               "moe.top_k": "experts per (sub-)token k", "moe.aux_loss_coef": "load-balancing loss coefficient",
               "moe.z_loss_coef": "router z-loss coefficient", "moe.capacity_factor": "capacity factor",
               "moe.expert_d_ff": "expert hidden size", "optim.lr": "peak learning rate"}
"""x-axis labels of known grid keys; any other key is labelled with itself."""
NOT_AXES = ("seed",)
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


def axis_label(key: str) -> str:
    return AXIS_LABELS.get(key, key)


def grid_axes(runs: pd.DataFrame, keys: tuple[str, ...] | list[str]) -> list[str]:
    """The spec's grid keys outside :data:`GRID_COLUMNS` that take 2+ values over the finished runs."""
    done = finished(runs)
    return [k for k in keys if k not in GRID_COLUMNS and k not in NOT_AXES and col(k) in done.columns
            and done[col(k)].dropna().astype(str).nunique() >= 2]


def grid_axis_lines(runs: pd.DataFrame, agg: pd.DataFrame, key: str) -> list[tuple[str, pd.DataFrame]]:
    """Lines along grid key ``key``: points that agree on every other config key, 2+ values of ``key``;
    each line's frame has the x position in ``x`` and the tick text in ``value``."""
    done = finished(runs)
    others = [c for c in config_columns(done) if c != col(key)]
    per_point = done.assign(line=row_text(done, others)).groupby("point")[[col(key), "line"]].first()
    data = agg.assign(value=agg["point"].map(per_point[col(key)]), line=agg["point"].map(per_point["line"]))
    data = data.dropna(subset=["value", "mean"])
    numbers = pd.to_numeric(data["value"], errors="coerce")
    if numbers.notna().all():
        data = data.assign(x=numbers.astype(float), value=numbers.map(lambda v: f"{v:g}"))
    else:  # categorical values (a router name): one position each, in sorted order
        order = sorted(data["value"].astype(str).unique())
        data = data.assign(value=data["value"].astype(str), x=data["value"].astype(str).map(order.index).astype(float))
    lines = [g.sort_values("x") for _, g in data.groupby("line", sort=False) if g["x"].nunique() >= 2]
    lines.sort(key=lambda g: paper_sort_key(g.iloc[0]))
    return [(_line_name(g.iloc[0], ""), g) for g in lines]


@styled
def plot_grid_axis(runs: pd.DataFrame, agg: pd.DataFrame, key: str, val_set: str) -> Figure:
    """Final perplexity (mean, error bars) along grid key ``key``, a line per point of the other keys.
    ``agg`` is :func:`analysis.stats.aggregate` output filtered to one metric."""
    lines = grid_axis_lines(runs, agg, key)
    if not lines:
        raise MissingData(f"{axis_label(key)}: no two points differ only in it")
    fig, axes = figure(SINGLE, 2.5)
    ax = axes[0][0]
    styles = line_styles(agg.drop_duplicates("label"))
    for name, g in lines:
        style = styles[g.iloc[0]["label"]]
        err = np.vstack([g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]])
        ax.errorbar(g["x"], g["mean"], yerr=np.where(np.isfinite(err), err, 0), label=name,
                    color=style["color"], marker=style["marker"])
    ticks = pd.concat([g[["x", "value"]] for _, g in lines]).drop_duplicates("x").sort_values("x")
    if ticks["x"].min() > 0 and ticks["x"].max() >= 8 * ticks["x"].min():  # e.g. 1e-3 .. 1e-1: even spacing
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ticks["x"].tolist(), ticks["value"].tolist())
    ax.set_xlabel(axis_label(key))
    ax.set_ylabel(f"final perplexity ({val_set})")
    ax.legend()
    return fig


def _axis_sweeps_notes(inputs: FigureInputs) -> list[str]:
    return [f"figure `axis_sweeps` leaves out {reason}" for reason in axis_panels(inputs.ppl)[1]]


def _axis_sweeps_caption(inputs: FigureInputs) -> str:
    drawn = ", ".join(AXES[a] for a, _ in axis_panels(inputs.ppl)[0])
    return (f"Final perplexity ({inputs.val_set}) along the axes that vary on their own ({drawn}); "
            f"error bars: {inputs.ci}")


FIGURES = [
    FigureEntry("axis_sweeps", place=2, caption=_axis_sweeps_caption, notes=_axis_sweeps_notes,
                draw=lambda i: plot_axis_sweeps(i.ppl, i.need_set())),
    FigureEntry("heads_experts", place=2,
                draw=lambda i: plot_heads_experts(i.ppl, i.need_set()),
                caption=lambda i: f"Final perplexity ({i.val_set}) at each heads x experts point that was run "
                                  f"(mean over seeds, {seed_count(i.ppl['n'])})"),
    FigureEntry("axis", place=2, axes=lambda i: grid_axes(i.runs, i.grid_axes),
                draw=lambda i: plot_grid_axis(i.runs, i.ppl, str(i.axis), i.need_set()),
                caption=lambda i: f"Final perplexity ({i.val_set}) along the grid axis {i.axis} "
                                  f"({axis_label(str(i.axis))}), a line per point of the other axes; "
                                  f"error bars: {i.ci}"),
]
