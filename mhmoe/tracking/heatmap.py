"""Expert-load heatmap PNG of one validation pass, so MLflow's artifact viewer can show routing.

The ``.npy`` beside it keeps the exact counts; the picture shows each MoE layer's share of
assignments per expert (rows sum to 1), with the uniform share marked in the title.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_load_heatmap(load: np.ndarray, path: Path, *, step: int, layer_names: list[str] | None = None) -> None:
    """``load`` is (MoE layers x experts) assignment counts; writes a PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: headless, no global figure registry

    share = load / np.maximum(load.sum(axis=1, keepdims=True), 1e-12)
    layers, experts = share.shape
    fig = Figure(figsize=(max(5.0, min(12.0, 2.5 + 0.35 * experts)), max(2.2, 1.2 + 0.35 * layers)), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(share, aspect="auto", cmap="cividis", vmin=0.0, vmax=max(float(share.max()), 1e-12))
    ax.set_xlabel("expert")
    ax.set_ylabel("MoE layer")
    ax.set_yticks(range(layers), layer_names or [str(i) for i in range(layers)])
    ax.set_title(f"expert load, step {step} (uniform = {1 / experts:.3f})", fontsize=9)
    fig.colorbar(image, ax=ax, label="share of assignments")
    fig.tight_layout()
    fig.savefig(path, format="png")


__all__ = ["save_load_heatmap"]
