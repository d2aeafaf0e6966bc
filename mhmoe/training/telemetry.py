"""Turn per-layer RoutingStats into MLflow metrics and validation-pass load matrices.

The one host sync happens here, on the steps the training loop chose to log.
"""

from __future__ import annotations

import numpy as np
import torch

from mhmoe.model.routing import LOGGED_STATS, RoutingStats
from mhmoe.tracking.names import routing_metric


def routing_metrics(routing: dict[int, RoutingStats]) -> dict[str, float]:
    """``routing/layer_<block>/<stat>`` for every MoE block plus ``routing/mean/<stat>``, for each
    logged field of :class:`RoutingStats` (:data:`LOGGED_STATS`)."""
    if not routing:
        return {}
    blocks = sorted(routing)
    values = torch.stack(
        [torch.stack([getattr(routing[b], stat).detach().float() for stat in LOGGED_STATS]) for b in blocks]
    ).cpu()  # (layers, stats): one transfer
    out: dict[str, float] = {}
    for row, block in zip(values.tolist(), blocks):
        out.update({routing_metric(block, stat): v for stat, v in zip(LOGGED_STATS, row)})
    for col, stat in zip(values.mean(0).tolist(), LOGGED_STATS):
        out[routing_metric("mean", stat)] = col
    return out


def grad_norm(parameters) -> float:
    """Total L2 norm of the gradients (before clipping), one host sync."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory so far: tensors allocated on a GPU, else the process's peak resident set (which also
    holds the interpreter and libraries, ~1 GiB; compare it with the estimate on GPUs)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class LoadAccumulator:
    """Sums tokens-per-expert and divergence histograms over a validation pass, per MoE block."""

    def __init__(self) -> None:
        self.load: dict[int, torch.Tensor] = {}
        self.divergence: dict[int, torch.Tensor] = {}

    def add(self, routing: dict[int, RoutingStats]) -> None:
        for block, stats in routing.items():
            self.load[block] = self.load.get(block, 0) + stats.tokens_per_expert.detach().double()
            self.divergence[block] = self.divergence.get(block, 0) + stats.divergence_hist.detach().double()

    def blocks(self) -> list[int]:
        """Block indices of the MoE layers, the row order of :meth:`matrices`."""
        return sorted(self.load)

    def reduce(self, sum_over_ranks) -> None:  # noqa: ANN001 - tensor -> tensor collective
        """Replace the counts by their sums over data-parallel ranks (every rank must call it)."""
        for block in sorted(self.load):
            self.load[block] = sum_over_ranks(self.load[block])
            self.divergence[block] = sum_over_ranks(self.divergence[block])

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(layers x experts) load and (layers x heads) divergence histogram, block order."""
        blocks = sorted(self.load)
        load = np.stack([self.load[b].cpu().numpy() for b in blocks]) if blocks else np.zeros((0, 0))
        div = np.stack([self.divergence[b].cpu().numpy() for b in blocks]) if blocks else np.zeros((0, 0))
        return load, div
