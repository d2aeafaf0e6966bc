"""AdamW with decay on matrices only; linear warmup, then a linear, cosine or warmup-stable-decay schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from mhmoe.config.run import OptimConfig


def param_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """Matrices (2-D and stacked 3-D expert weights, embeddings) decay; norms and biases do not."""
    decay = [p for p in net.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in net.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_multiplier(step: int, *, warmup_steps: int, max_steps: int, min_lr_ratio: float,
                  schedule: str = "linear", decay_fraction: float = 0.2) -> float:
    """Fraction of peak LR at ``step``: linear warmup, then ``schedule`` down to ``min_lr_ratio``.

    ``wsd`` holds the peak until the last ``decay_fraction`` of ``max_steps`` and decays linearly
    there, so runs of several lengths can share one stable phase and branch only their decays.
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "wsd":
        decay_start = max(warmup_steps, max_steps - round(decay_fraction * max_steps))
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1, max_steps - decay_start))
        return 1.0 - (1.0 - min_lr_ratio) * progress
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if schedule == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - (1.0 - min_lr_ratio) * progress


def build_optimizer(net: nn.Module, optim: OptimConfig, max_steps: int, *, fused: bool = True
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """``fused=False`` under Lightning's mixed precision: its gradient clipping refuses an optimizer
    that unscales gradients itself (the fused kernel), even in bf16 where nothing is scaled."""
    # The fused kernel (CPU and CUDA) is ~4x faster than the per-tensor loop on CPU at these sizes;
    # unfused, torch picks its multi-tensor (foreach) path on CUDA.
    beta1, beta2 = optim.betas  # OptimConfig checks there are two
    optimizer = torch.optim.AdamW(
        param_groups(net, optim.weight_decay), lr=optim.lr, betas=(beta1, beta2), eps=optim.eps, fused=fused
    )

    def multiplier(step: int) -> float:
        return lr_multiplier(step, warmup_steps=optim.warmup_steps, max_steps=max_steps,
                             min_lr_ratio=optim.min_lr_ratio, schedule=optim.schedule,
                             decay_fraction=optim.decay_fraction)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
