"""Optimizer-step means of the training losses over gradient-accumulation micro-batches.

Lightning divides each micro-batch's loss by ``accumulate_grad_batches`` before backward, so the
gradient is that of the mean over micro-batches; the logged losses are the same means. The aux
losses are computed per micro-batch (as the official code does per device batch), so with the aux
loss on, an accumulated step differs from one big batch by exactly that definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mhmoe.model.routing import RoutingStats


@dataclass
class StepLosses:
    """The aux losses and routing stats of a training step's output (``LitLM.training_step``), or their
    means over one optimizer step: what :class:`~mhmoe.training.callbacks.TrainMetrics` logs."""

    lb_loss: torch.Tensor
    z_loss: torch.Tensor
    routing: dict[int, RoutingStats] = field(default_factory=dict)
    """Routing telemetry of the step's last micro-batch."""


class StepMeans:
    """Sums detached losses on device over ``accumulate`` micro-batches; no host sync."""

    def __init__(self, accumulate: int) -> None:
        self.accumulate = accumulate
        self._count = 0
        self._sums: torch.Tensor | None = None

    def add(self, ce: torch.Tensor, out, over_ranks=None) -> tuple[torch.Tensor, StepLosses] | None:  # noqa: ANN001
        """Add one micro-batch (``out``: its ModelOutput); when it completes the step, returns the mean
        ce and aux losses, averaged over data-parallel ranks by ``over_ranks`` (a collective: every
        rank completes its steps in lockstep)."""
        losses = torch.stack([ce.detach().float(), out.lb_loss.detach().float(), out.z_loss.detach().float()])
        self._sums = losses if self._sums is None else self._sums + losses
        self._count += 1
        if self._count < self.accumulate:
            return None
        means = self._sums / self.accumulate
        ce_mean, lb_mean, z_mean = over_ranks(means) if over_ranks is not None else means
        self._count, self._sums = 0, None
        return ce_mean, StepLosses(lb_loss=lb_mean, z_loss=z_mean, routing=out.routing)
