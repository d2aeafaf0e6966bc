"""One figure style for every plot: two-column paper sizes, Okabe-Ito colours, PNG + PDF output,
and the one place that names points as the paper does and puts them in the paper's order
(:func:`paper_names`; figures, tables and the index all use it).

Figures are plain ``matplotlib.figure.Figure`` objects (no pyplot, so no GUI backend and no global
figure registry: headless by construction, Agg renders the PNG) drawn inside an ``rc_context``, so
importing this module changes no global matplotlib state. Files are saved at the figure's exact
size (no ``bbox_inches="tight"``): a 3.5 in figure is 3.5 in wide in the paper and 3.5 x DPI
pixels in the PNG.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator
from matplotlib.typing import RcKeyType

from analysis.frame import model_name
from mhmoe.config.architecture import is_quantized
from mhmoe.config.variants import VARIANTS, multi_head, paper_order, projections_default, routes
from mhmoe.tracking.display import modifier_text  # noqa: F401 - re-exported: one rule for names

SINGLE = 3.5  # in, one column of a two-column paper
DOUBLE = 7.0  # in, full text width
DPI = 200
FORMATS = ("png", "pdf")

# Okabe & Ito (2008), colour-blind safe. Yellow last: it is hard to see on white.
OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
    "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7", "yellow": "#F0E442",
}
FAMILY_COLOURS = {key: entry.colour for key, entry in VARIANTS.items()}
"""``model.ffn -> Okabe-Ito colour name`` (the variant registry's)."""
_MULTI_HEAD_BY_HEADS = ["green", "blue", "vermillion", "purple", "yellow"]  # h = 2, 3, 4, 6, 8, ... in order
SEQUENTIAL_CMAP = "cividis"  # perceptually uniform, readable with colour-vision deficiency
DIVERGING_CMAP = "PuOr_r"  # colour-blind-safe diverging map (ColorBrewer)

RC: dict[RcKeyType, Any] = {
    "font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "xtick.labelsize": 6, "ytick.labelsize": 6,
    "legend.fontsize": 6, "legend.frameon": False, "lines.linewidth": 1.1, "lines.markersize": 3.5,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
    "grid.linewidth": 0.5, "figure.dpi": DPI, "savefig.dpi": DPI, "pdf.fonttype": 42, "errorbar.capsize": 2,
}


def colour(name: str) -> str:
    return OKABE_ITO[name]


def family_colour(family: str) -> str:
    return OKABE_ITO[FAMILY_COLOURS.get(family, "purple")]


def line_styles(points) -> dict[str, dict]:
    """``label -> {color, linestyle, marker}`` for a points frame, stable across figures.

    Colour encodes the family (MH-MoE: one colour per head count); line style encodes the
    modifiers (BitNet dashed, shared expert dotted, head/merge ablations dash-dot).
    """
    heads = {family: sorted(group["heads"].unique()) for family, group in points.groupby("family")}
    out: dict[str, dict] = {}
    for _, p in points.iterrows():
        if multi_head(p["family"]):
            index = heads[p["family"]].index(p["heads"])
            name = _MULTI_HEAD_BY_HEADS[index % len(_MULTI_HEAD_BY_HEADS)]
        else:
            name = FAMILY_COLOURS.get(p["family"], "purple")
        default = projections_default(p["family"])
        ablated = (p["head_proj"], p["merge_proj"]) != (default, default)
        style = "--" if is_quantized(p["weight_bits"]) else ":" if p["shared"] else "-." if ablated else "-"
        out[p["label"]] = {"color": OKABE_ITO[name], "linestyle": style}
    markers = "osD^vP*X"
    seen: dict[tuple, int] = {}
    for label in sorted(out):  # several points with the same colour and style get distinct markers
        key = (out[label]["color"], out[label]["linestyle"])
        out[label]["marker"] = markers[seen.get(key, 0) % len(markers)]
        seen[key] = seen.get(key, 0) + 1
    return out


def paper_name(row) -> str:
    """The paper's name for a point (``MH-MoE (head=2)``, ``SMoE + shared expert``, ``Dense, BitNet b1.58``).

    ``row`` is a row of a points or aggregates frame (family, heads, head_proj, merge_proj, shared,
    weight_bits, variant, label). What a label adds to its variant when several points share it
    (``E=32``) follows after a comma, so no two points get the same name.
    """
    name = (model_name(row["family"], row["heads"]) or str(row["variant"])) + modifier_text(row)
    label, variant = str(row["label"]), str(row["variant"])
    extra = label[len(variant):].strip() if label.startswith(variant) else ""
    return f"{name}, {extra}" if extra else name


def paper_sort_key(row) -> tuple:
    """The paper's row order: Dense, SMoE, Fine-grained SMoE, MH-MoE (head=2), (head=3), ..., in the paper's table
    order of modifiers (plain as Table 1, shared expert as Table 2, BitNet as Table 3, head/merge
    ablations as Tables 4-5); then by experts and label (stable for everything else)."""
    family = paper_order(row["family"])
    default = projections_default(row["family"])
    ablated = (bool(row["head_proj"]), bool(row["merge_proj"])) != (default, default) and routes(row["family"])
    experts = row["experts"] if row["experts"] == row["experts"] else 0  # NaN for dense
    quantized = is_quantized(float(row["weight_bits"]))
    return (ablated, quantized, bool(row["shared"]), family, int(row["heads"]), experts, str(row["label"]))


def paper_names(frame) -> dict[str, str]:
    """``label -> paper name`` for every label of a points/aggregates frame, in the paper's order."""
    rows = frame.drop_duplicates("label")
    ordered = sorted((r for _, r in rows.iterrows()), key=paper_sort_key)
    return {r["label"]: paper_name(r) for r in ordered}


def figure(width: float = SINGLE, height: float = 2.4, nrows: int = 1, ncols: int = 1,
           **kwargs) -> tuple[Figure, np.ndarray]:
    """A new figure in the house style (constrained layout)."""
    with mpl.rc_context(RC):
        fig = Figure(figsize=(width, height), layout="constrained", dpi=DPI)
        axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def styled(fn):
    """Decorator: run a plotting function inside the house rc_context."""
    def wrapper(*args, **kwargs):
        with mpl.rc_context(RC):
            return fn(*args, **kwargs)
    wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = fn.__name__, fn.__doc__, fn
    return wrapper


def save(fig: Figure, out_dir: Path, stem: str, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` at the figure's exact size, (a pyplot-free Figure needs no closing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with mpl.rc_context(RC):
        for fmt in formats:
            path = out_dir / f"{stem}.{fmt}"
            # Fixed metadata keeps reruns byte-stable for PDFs (no creation date).
            metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
            fig.savefig(path, format=fmt, dpi=DPI, metadata=metadata)
            paths.append(path)
    return paths


def plain_log_ticks(axis) -> None:
    """Log-scale ticks as plain numbers (20, 30, 40) instead of 2x10^1; call after plotting.

    Within less than a decade the log locator leaves few or no labelled ticks (1270..1350 has
    none), so there a handful of evenly spaced plain ticks label the axis instead.
    """
    low, high = axis.get_view_interval()
    plain = FuncFormatter(lambda v, _: f"{v:.4g}")
    if low > 0 and high / low < 10:
        axis.set_major_locator(MaxNLocator(nbins=5))
        axis.set_minor_locator(NullLocator())
        axis.set_major_formatter(plain)
        return
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "235" else ""))


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")
