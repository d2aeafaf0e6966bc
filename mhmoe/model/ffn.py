"""The FFN of one block, per variant: the builders :data:`mhmoe.config.variants.VARIANTS` names.

A builder takes (Architecture, is_moe_block) and returns a module whose forward maps
(B, T, D) to ``(output, RoutingStats | None)``. SMoE, fine-grained SMoE and MH-MoE share
:func:`routed_ffn`: they differ only in config (heads, segmentation, head/merge), which
:func:`mhmoe.config.architecture.check_architecture` constrains per variant and the variant's layer shape
(:attr:`mhmoe.config.architecture.Architecture.layer`) turns into what :class:`MoELayer` allocates.
"""

from __future__ import annotations

import torch
from torch import nn

from mhmoe.config.architecture import Architecture
from mhmoe.model.layers import SwiGLU
from mhmoe.model.moe import MoELayer


class DenseFFN(SwiGLU):
    """Dense SwiGLU with the MoE layer's (output, stats) interface; stats is None."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return super().forward(x), None


def dense_ffn(arch: Architecture, is_moe_block: bool) -> nn.Module:
    """Every block keeps the dense SwiGLU of width ``model.d_ff``."""
    return DenseFFN(arch.model.d_model, arch.model.d_ff)


def routed_ffn(arch: Architecture, is_moe_block: bool) -> nn.Module:
    """The MoE layer in MoE blocks, the dense SwiGLU elsewhere."""
    if not is_moe_block:
        return DenseFFN(arch.model.d_model, arch.model.d_ff)
    return MoELayer(arch)


__all__ = ["DenseFFN", "dense_ffn", "routed_ffn"]
