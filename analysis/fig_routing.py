"""Figures 3 and 4: expert-load heatmaps and routing statistics by variant.

Inputs are the last-step routing artifacts (:func:`analysis.load.load_routing_arrays`):
``load`` is MoE layers x experts assignment counts, ``divergence`` is MoE layers x heads where
column j counts tokens whose h sub-tokens reached j+1 distinct experts.
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from analysis.figures import FigureEntry, FigureInputs
from analysis.frame import MissingData, finished, points
from analysis.stats import interval_text, seed_count
from analysis.style import DIVERGING_CMAP, DOUBLE, SEQUENTIAL_CMAP, figure, line_styles, paper_names, styled
from mhmoe.config.architecture import is_quantized
from mhmoe.config.variants import multi_head, routes
from mhmoe.tracking.names import routing_metric

MIN_LOAD_SPAN = 0.25  # log2 units: the colour scale spans at least 0.84x .. 1.19x the uniform share
LOAD_TICKS = 5
MAX_LOAD_PANELS = 6
ACTIVATION = routing_metric("mean", "activation_ratio")
IMBALANCE = routing_metric("mean", "load_imbalance")


def load_shares(runs: pd.DataFrame, arrays: dict[str, tuple[int, np.ndarray]]) -> dict[str, np.ndarray]:
    """``label -> (layers x experts)`` load / uniform share, averaged over the point's seeds.

    1 means the expert got exactly 1/E of its layer's assignments; 0 means it was never chosen.
    """
    out: dict[str, np.ndarray] = {}
    for label, group in finished(runs).groupby("label", sort=True):
        mats = []
        for run_id in group["run_id"]:
            if run_id in arrays:
                counts = np.asarray(arrays[run_id][1], dtype="float64")
                totals = counts.sum(axis=1, keepdims=True)
                uniform = np.where(totals > 0, totals / counts.shape[1], np.nan)
                mats.append(counts / uniform)
        if mats and len({m.shape for m in mats}) == 1:
            out[label] = np.nanmean(np.stack(mats), axis=0)
    return out


def select_load_labels(runs: pd.DataFrame, available: list[str], limit: int = MAX_LOAD_PANELS) -> list[str]:
    """One representative per family/head count (full precision, no shared expert preferred)."""
    pts = points(runs)
    pts = pts[pts["label"].isin(available)].copy()
    pts["rank"] = is_quantized(pts["weight_bits"]).astype(int) + pts["shared"].astype(int)
    pts = pts.sort_values(["family", "heads", "rank", "n_runs", "label"], ascending=[True, True, True, False, True])
    chosen = pts.drop_duplicates(["family", "heads"])
    return list(paper_names(chosen))[:limit]


def load_span(shares: dict[str, np.ndarray]) -> float:
    """Half-range of the colour scale in log2 units: the largest |log2 share| in the data (experts
    that were never chosen, share 0, are left out: they are drawn at the low end), at least
    :data:`MIN_LOAD_SPAN`. The scale is symmetric in log around 1 (the uniform share)."""
    logs = [np.log2(m[np.isfinite(m) & (m > 0)]) for m in shares.values()]
    finite = np.concatenate([v.ravel() for v in logs]) if logs else np.array([])
    return max(float(np.abs(finite).max()) if finite.size else 0.0, MIN_LOAD_SPAN)


@styled
def plot_expert_load(shares: dict[str, np.ndarray], names: dict[str, str] | None = None) -> Figure:
    """Experts x MoE layers heatmaps of load relative to the uniform share, side by side, titled with
    ``names[label]`` (paper names); the colour scale is fitted to the data (:func:`load_span`)."""
    if not shares:
        raise MissingData("no routing/load_step*.npy artifacts")
    labels = list(shares)
    names = names or {}
    span = load_span(shares)
    fig, axes = figure(DOUBLE, 2.8, ncols=len(labels))
    norm = Normalize(-span, span)
    image = None
    for ax, label in zip(axes[0], labels):
        share = shares[label]
        with np.errstate(divide="ignore"):
            log_share = np.clip(np.log2(share), -span, span)
        image = ax.imshow(log_share.T, cmap=DIVERGING_CMAP, norm=norm, aspect="auto", interpolation="nearest")
        ax.set_title(names.get(label, label))
        ax.set_xlabel("MoE layer")
        ax.set_xticks(range(share.shape[0]))
        ax.grid(False)
    axes[0][0].set_ylabel("expert")
    assert image is not None  # shares is not empty (checked above), so the loop drew at least one panel
    bar = fig.colorbar(image, ax=list(axes[0]), label="load / uniform share")
    ticks = np.linspace(-span, span, LOAD_TICKS).tolist()
    bar.set_ticks(ticks, labels=[f"{2.0 ** t:.2g}" for t in ticks])
    return fig


def divergence_distribution(runs: pd.DataFrame, arrays: dict[str, tuple[int, np.ndarray]]) -> pd.DataFrame:
    """Long frame (label, name, heads, distinct, fraction) in the paper's order: share of tokens whose
    h sub-tokens reached ``distinct`` different experts, pooled over MoE layers and seeds (MH-MoE
    points with h >= 2)."""
    rows = []
    mh = finished(runs)
    mh = mh[mh["family"].map(multi_head).astype(bool) & (mh["heads"] >= 2)]
    for label, name in paper_names(mh).items():
        group = mh[mh["label"] == label]
        hists = [np.asarray(arrays[r][1], dtype="float64").sum(axis=0) for r in group["run_id"] if r in arrays]
        if not hists or len({len(h) for h in hists}) != 1:
            continue
        total = np.sum(hists, axis=0)
        if total.sum() <= 0:
            continue
        frac = total / total.sum()
        rows += [{"label": label, "name": name, "heads": len(frac), "distinct": j + 1, "fraction": f}
                 for j, f in enumerate(frac)]
    return pd.DataFrame(rows, columns=["label", "name", "heads", "distinct", "fraction"])


def _bar_panel(ax, agg: pd.DataFrame, metric: str, order: list[str], styles: dict, xlabel: str) -> bool:
    data = agg[(agg["metric"] == metric) & agg["mean"].notna()].set_index("label").reindex(order)
    if data["mean"].isna().all():
        return False
    y = np.arange(len(order))
    err = np.vstack([data["mean"] - data["ci_low"], data["ci_high"] - data["mean"]])
    ax.barh(y, data["mean"].fillna(0), color=[styles[lab]["color"] for lab in order],
            xerr=np.where(np.isfinite(err), err, 0), height=0.7)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", visible=False)
    return True


def _divergence_panel(ax, dist: pd.DataFrame) -> bool:
    """100% stacked bars: per MH-MoE point, the share of tokens reaching 1, 2, ..., h experts."""
    if dist.empty:
        return False
    names = dict(zip(dist["label"], dist["name"])) if "name" in dist else {}
    labels = list(dict.fromkeys(dist["label"]))  # already in the paper's order
    most = int(dist["distinct"].max())
    cmap = mpl.colormaps[SEQUENTIAL_CMAP]
    left = np.zeros(len(labels))
    for k in range(1, most + 1):
        share = dist[dist["distinct"] == k].set_index("label")["fraction"].reindex(labels).fillna(0).to_numpy()
        ax.barh(np.arange(len(labels)), share, left=left, height=0.7, color=cmap((k - 1) / max(most - 1, 1)),
                label=str(k), edgecolor="white", linewidth=0.3)
        left += share
    ax.set_yticks(np.arange(len(labels)), [names.get(lab, lab) for lab in labels])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of tokens")
    ax.set_title("sub-token divergence")
    ax.grid(axis="y", visible=False)
    # below the figure, where constrained layout reserves room (an axes-anchored legend can overlap)
    ax.figure.legend(*ax.get_legend_handles_labels(), title="distinct experts reached by a token's sub-tokens",
                     ncol=most, loc="outside lower right", handlelength=1, columnspacing=0.8)
    return True


@styled
def plot_routing_stats(runs: pd.DataFrame, agg: pd.DataFrame, divergence: pd.DataFrame) -> Figure:
    """Activation ratio and load imbalance per routed variant (mean, 95% CI), and the distribution of
    distinct experts reached by an MH-MoE token's sub-tokens."""
    styles = line_styles(points(runs))
    routed = agg[agg["family"].map(routes).astype(bool) & agg["metric"].isin([ACTIVATION, IMBALANCE])
                 & agg["mean"].notna()]
    names = paper_names(routed) if len(routed) else {}
    order = list(names)
    n_rows = max(len(order), divergence["label"].nunique() if len(divergence) else 0, 3)
    fig, axes = figure(DOUBLE, 1.3 + 0.17 * n_rows, ncols=3)
    a, b, c = axes[0]
    drawn = [bool(order) and _bar_panel(a, agg, ACTIVATION, order, styles, "activation ratio"),
             bool(order) and _bar_panel(b, agg, IMBALANCE, order, styles, "load imbalance (max/mean)"),
             _divergence_panel(c, divergence)]
    if not any(drawn):
        raise MissingData(f"no {ACTIVATION} / {IMBALANCE} metrics and no MH-MoE divergence artifacts")
    for ax in (a, b):
        ax.set_yticks(np.arange(len(order)), list(names.values()) if ax is a else [])
        ax.set_ylim(len(order) - 0.5, -0.5)
    for ax, ok in zip(axes[0], drawn):
        if not ok:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    return fig


def _shown_loads(inputs: FigureInputs) -> dict[str, np.ndarray]:
    shares = load_shares(inputs.runs, inputs.loads)
    return {k: shares[k] for k in select_load_labels(inputs.runs, list(shares))}


def _load_caption(inputs: FigureInputs) -> str:
    pts = points(inputs.runs)
    load_n = pts.set_index("label").reindex(list(_shown_loads(inputs)))["n_runs"] if len(pts) else []
    return (f"Expert load relative to the uniform share, last logged step (mean over {seed_count(load_n)}); "
            "colour scale fitted to the data, symmetric in log around 1")


FIGURES = [
    FigureEntry(
        "expert_load", place=3, caption=_load_caption,
        draw=lambda i: plot_expert_load(_shown_loads(i), paper_names(points(i.runs)))),
    FigureEntry(
        "routing_stats", place=4,
        draw=lambda i: plot_routing_stats(i.runs, i.agg, divergence_distribution(i.runs, i.divergence)),
        caption=lambda i: "Routing statistics by variant (error bars: "
                          f"{interval_text(i.agg[i.agg['metric'] == ACTIVATION]['n'])}) and MH-MoE sub-token "
                          "divergence (pooled over seeds and MoE layers)"),
]
