"""Figure 2: final perplexity along the sweep axes (heads, experts, weight bits) and a heads x experts heatmap."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from analysis.frame import MissingData
from analysis.style import DOUBLE, SEQUENTIAL_CMAP, SINGLE, figure, line_styles, styled

AXES = {"heads": "MH-MoE heads h", "experts": "experts per MoE layer E", "weight_bits": "weight bits"}
_FAMILY = ["family", "shared", "head_proj", "merge_proj"]


def _line_name(row: pd.Series, axis: str, key: list[str]) -> str:
    name = row["family"] if (row["family"] != "mhmoe" or "heads" not in key) else f"mhmoe-h{row['heads']}"
    default = row["family"] == "mhmoe"
    if (row["head_proj"], row["merge_proj"]) != (default, default):
        name += ("+head" if row["head_proj"] else "+nohead") + ("+merge" if row["merge_proj"] else "+nomerge")
    if row["shared"]:
        name += "+shared"
    if "weight_bits" in key and row["weight_bits"] < 16:
        name += f"+w{row['weight_bits']:g}"
    if "experts" in key and axis != "experts" and pd.notna(row["experts"]):
        name += f" E={row['experts']:g}"
    return name


def axis_lines(agg: pd.DataFrame, axis: str) -> list[tuple[str, pd.DataFrame]]:
    """Lines along ``axis``: points that differ only in ``axis``, grouped by variant family.

    The budget solver changes experts and widths together with heads, so the grouping first
    holds every other axis fixed and, if that leaves no line with two x values, lets the other
    axes float (as long as each x stays unique within a line).
    """
    others = [a for a in AXES if a != axis]
    candidates = [others, *[[o] for o in others], []]
    data = agg.dropna(subset=[axis, "mean"])
    for extra in candidates:
        key = _FAMILY + extra
        groups = [(g.iloc[0], g) for _, g in data.groupby(key, dropna=False, sort=True)]
        if any(g[axis].duplicated().any() for _, g in groups):
            continue
        lines = [(_line_name(first, axis, key), g.sort_values(axis)) for first, g in groups if g[axis].nunique() >= 2]
        if lines:
            return lines
    return []


@styled
def plot_axis_sweeps(agg: pd.DataFrame, val_set: str) -> Figure:
    """One panel per swept axis: final perplexity (mean, 95% CI error bars), a line per family.

    ``agg`` is :func:`analysis.stats.aggregate` output filtered to one metric.
    """
    panels = [(axis, lines) for axis in AXES if (lines := axis_lines(agg, axis))]
    if not panels:
        raise MissingData("no variant family varies heads, experts or weight bits over 2+ values")
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


def heatmap_grid(agg: pd.DataFrame) -> tuple[str, pd.DataFrame] | None:
    """The heads x experts grid (mean perplexity) of the family that has the most cells, if 2x2+."""
    best = None
    for _, g in agg.dropna(subset=["heads", "experts", "mean"]).groupby([*_FAMILY, "weight_bits"], sort=True):
        grid = g.pivot_table(index="heads", columns="experts", values="mean")
        cells = int(grid.notna().sum().sum())
        if grid.shape[0] >= 2 and grid.shape[1] >= 2 and (best is None or cells > best[2]):
            best = (_line_name(g.iloc[0], "heads", [*_FAMILY, "weight_bits"]), grid, cells)
    return best[:2] if best else None


@styled
def plot_heads_experts(agg: pd.DataFrame, val_set: str) -> Figure:
    """Heatmap of final perplexity over heads (rows) x experts (columns), values printed."""
    found = heatmap_grid(agg)
    if found is None:
        raise MissingData("the sweep does not vary both heads and experts within one family")
    name, grid = found
    fig, axes = figure(SINGLE, 0.9 + 0.32 * grid.shape[0])
    ax = axes[0][0]
    image = ax.imshow(grid.to_numpy(), cmap=SEQUENTIAL_CMAP, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [f"{e:g}" for e in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{h:g}" for h in grid.index])
    ax.set_xlabel("experts per MoE layer E")
    ax.set_ylabel("heads h")
    ax.grid(False)
    ax.set_title(f"{name}: final perplexity ({val_set})")
    ax.spines[["top", "right"]].set_visible(True)
    vmid = np.nanmean(grid.to_numpy())
    for (i, j), v in np.ndenumerate(grid.to_numpy()):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < vmid else "black")
    fig.colorbar(image, ax=ax, label="perplexity")
    return fig
