"""Figures 5 and 6: the BitNet vs full-precision gap, and perplexity vs training FLOPs per token.

FLOPs are shown as the relative difference to the baseline point in percent: FLOP-matched
variants differ by a few percent, and an absolute axis zoomed onto that spread makes them look
far apart in compute.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from analysis.figures import FigureEntry, FigureInputs
from analysis.frame import MissingData, baseline_point, col, config_columns, finished, points, ppl_col, row_text
from analysis.paper import paper_frame
from analysis.stats import difference, interval_text, per_seed
from analysis.style import DOUBLE, SINGLE, family_colour, figure, line_styles, paper_name, paper_sort_key, styled
from mhmoe.config.architecture import is_quantized
from mhmoe.config.variants import projections_default
from mhmoe.tracking import names

FLOPS = "budget.train_flops_per_token"
MIN_SPAN_PCT = 5.0  # FLOP-matched points (within a few %) are drawn as close as they are


def _base_key(runs: pd.DataFrame) -> pd.Series:
    """What a point is apart from quantization: config params without ``quant.*`` and seeds."""
    cols = config_columns(runs, drop=("quant.",))
    if not cols:  # hand-built frames: the label minus its +w<bits> suffix
        return runs["variant"].str.replace(r"\+w[0-9.]+$", "", regex=True)
    text = row_text(runs, cols)
    return text.map(lambda t: hashlib.sha256(t.encode()).hexdigest()[:10])


def _paper_gap(model: str | None) -> float:
    """ln(ppl BitNet / ppl full precision) of the paper (Table 3 vs Table 1, 100k, RedPajama)."""
    p = paper_frame()
    p = p[(p["model"] == model) & (p["steps"] == 100_000) & (p["column"] == "RedPajama")]
    t1, t3 = p.loc[p["table"] == "T1", "ppl"], p.loc[p["table"] == "T3", "ppl"]
    return float(np.log(t3.iloc[0] / t1.iloc[0])) if len(t1) and len(t3) else np.nan


def bitnet_gaps(runs: pd.DataFrame, val_set: str) -> pd.DataFrame:
    """Per full-precision variant and bit width: ln ppl(quantized) - ln ppl(full), nats, paired by seed."""
    done = finished(runs).assign(base=lambda f: _base_key(f))
    metric = names.val_metric(val_set, "ppl")
    rows = []
    for _, group in done.groupby("base", sort=False):
        full = group[~is_quantized(group["weight_bits"])]
        if full.empty:
            continue
        fp = full.iloc[0]
        b = per_seed(runs, fp["point"], metric, log=True)
        for _, q in group[is_quantized(group["weight_bits"])].drop_duplicates("point").iterrows():
            d = difference(per_seed(runs, q["point"], metric, log=True), b)
            default = projections_default(fp["family"])
            plain = not fp["shared"] and (fp["head_proj"], fp["merge_proj"]) == (default, default)
            rows.append({"label": fp["label"], "name": paper_name(fp), "order": paper_sort_key(fp),
                         "family": fp["family"], "weight_bits": q["weight_bits"],
                         "quantized_label": q["label"], **d,
                         "paper_gap": _paper_gap(fp["paper_model"]) if plain and q["weight_bits"] == 1.58 else np.nan})
    return pd.DataFrame(rows)


@styled
def plot_bitnet_gap(gaps: pd.DataFrame, val_set: str) -> Figure:
    """Bars: the quantization cost in nats per variant (95% CI); diamonds: the paper's gap."""
    gaps = gaps.dropna(subset=["delta"]) if "delta" in gaps.columns else gaps.iloc[:0]
    if gaps.empty:
        raise MissingData("no variant was trained both at full precision and quantized")
    bits = sorted(gaps["weight_bits"].unique())
    gaps = gaps.sort_values("order")  # the paper's order of the full-precision variants
    labels = list(dict.fromkeys(gaps["label"]))
    names = dict(zip(gaps["label"], gaps["name"]))
    fig, axes = figure(SINGLE if len(labels) <= 5 else DOUBLE, 2.4)
    ax = axes[0][0]
    width = 0.8 / len(bits)
    hatches = [None, "//", "..", "xx"]
    for i, b in enumerate(bits):
        g = gaps[gaps["weight_bits"] == b].set_index("label").reindex(labels)
        x = np.arange(len(labels)) + (i - (len(bits) - 1) / 2) * width
        err = np.vstack([g["delta"] - g["ci_low"], g["ci_high"] - g["delta"]])
        ax.bar(x, g["delta"], width=width, yerr=np.where(np.isfinite(err), err, 0),
               color=[family_colour(f) if isinstance(f, str) else "grey" for f in g["family"]],
               hatch=hatches[i % len(hatches)], edgecolor="white", linewidth=0.3, label=f"{b:g}-bit")
        paper = g["paper_gap"].to_numpy(dtype=float)
        if np.isfinite(paper).any():
            ax.scatter(x, paper, marker="D", facecolor="none", edgecolor="black", zorder=3,
                       label="paper (T3 vs T1)" if i == 0 else None)
    ax.set_xticks(np.arange(len(labels)), [names[lab] for lab in labels], rotation=30, ha="right")
    ax.set_ylabel("Δ ln ppl vs 16-bit (nats)")
    ax.set_title(f"quantization cost on {val_set}")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend()
    return fig


def flops_frame(runs: pd.DataFrame, agg: pd.DataFrame, val_set: str) -> pd.DataFrame:
    """Per point: train FLOPs per token (from the budget params), ``flops_pct`` (relative to the
    baseline point, :func:`analysis.frame.baseline_point`, in percent), ``baseline`` (its paper
    name) and final perplexity stats."""
    if col(FLOPS) not in runs.columns or ppl_col(val_set) not in runs.columns:
        raise MissingData(f"param {FLOPS} or metric val/{val_set}/ppl not logged")
    flops = finished(runs).groupby("point")[col(FLOPS)].mean()
    data = agg[agg["metric"] == names.val_metric(val_set, "ppl")].copy()
    data["flops"] = data["point"].map(flops)
    data = data.dropna(subset=["flops", "mean"])
    pts = points(runs).set_index("point")
    base = baseline_point(pts.reset_index())
    if base not in flops or not np.isfinite(flops[base]):
        raise MissingData(f"the baseline {paper_name(pts.loc[base])} has no {FLOPS} param")
    data["flops_pct"] = 100 * (data["flops"] / flops[base] - 1)
    data["baseline"] = paper_name(pts.loc[base])
    return data


@styled
def plot_ppl_vs_flops(data: pd.DataFrame, val_set: str) -> Figure:
    """Final perplexity (95% CI) against training FLOPs per token relative to the baseline (%),
    one marker per point in the paper's order; the x axis spans at least +-MIN_SPAN_PCT."""
    if data.empty:
        raise MissingData(f"no point has both {FLOPS} and a final val/{val_set}/ppl")
    fig, axes = figure(SINGLE, 2.4 + 0.11 * ((len(data) + 1) // 2))
    ax = axes[0][0]
    styles = line_styles(data)
    for _, r in sorted(data.iterrows(), key=lambda item: paper_sort_key(item[1])):
        style = styles[r["label"]]
        err = [[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]]
        ax.errorbar([r["flops_pct"]], [r["mean"]], yerr=np.where(np.isfinite(err), err, 0), linestyle="none",
                    marker=style["marker"], color=style["color"], label=paper_name(r),
                    markerfacecolor="none" if is_quantized(r["weight_bits"]) else style["color"])  # open = quantized
    low, high = data["flops_pct"].min(), data["flops_pct"].max()
    pad = 0.08 * max(high - low, 2 * MIN_SPAN_PCT)
    ax.set_xlim(min(low, -MIN_SPAN_PCT) - pad, max(high, MIN_SPAN_PCT) + pad)
    ax.axvline(0, color="black", linewidth=0.5)
    ax.xaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.set_xlabel(f"training FLOPs per token vs {data['baseline'].iloc[0]}")
    ax.set_ylabel(f"final perplexity ({val_set})")
    fig.legend(loc="outside lower center", ncol=2)
    return fig


def _gaps(inputs: FigureInputs) -> pd.DataFrame:
    return bitnet_gaps(inputs.runs, inputs.val_set) if inputs.val_set else pd.DataFrame()


def _flops_caption(inputs: FigureInputs) -> str:
    pts = points(inputs.runs)
    base = paper_name(pts.set_index("point").loc[baseline_point(pts)]) if len(pts) else "the baseline"
    return (f"Final perplexity ({inputs.val_set}) vs training FLOPs per token relative to {base}, in percent; "
            f"error bars: {inputs.ci}")


FIGURES = [
    FigureEntry(
        "bitnet_gap", place=5,
        draw=lambda i: plot_bitnet_gap(_gaps(i), i.need_set()),
        caption=lambda i: f"BitNet vs full precision: Δ ln ppl ({i.val_set}) paired by seed; error bars: "
                          f"{interval_text(_gaps(i)['n_a'], paired=True)}"),
    FigureEntry(
        "ppl_vs_flops", place=6, caption=_flops_caption,
        draw=lambda i: plot_ppl_vs_flops(flops_frame(i.runs, i.agg, i.need_set()), i.need_set())),
]
