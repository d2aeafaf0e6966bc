"""MH-MoE with experts per head (``model.ffn=mhmoe_per_head``, docs/MODEL.md "Adding a variant").

As MH-MoE, each token is split into h sub-tokens after the head layer, but head j's sub-tokens
route only among head j's own pool of ``moe.num_experts`` experts, with head j's own router: the
layer holds h routers and h E experts. Its :class:`~mhmoe.config.variants.LayerShape` has ``pools = h``,
which is how the budget and the matcher count it.

The h pools share one expert stack (pool j holds experts j E .. (j + 1) E - 1), so sorting,
kernels and capacity run unchanged in :class:`~mhmoe.model.moe.MoELayer`; only routing differs.
Shape legend as in :mod:`mhmoe.model.moe`: N tokens, H heads, S = N H sub-tokens, E experts per pool.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from mhmoe.config.architecture import Architecture, MoEConfig
from mhmoe.config.variants import LayerShape
from mhmoe.model.ffn import DenseFFN
from mhmoe.model.moe import MoELayer
from mhmoe.model.registry import router_class
from mhmoe.model.routing import RouterOutput


class PerHeadMoELayer(MoELayer):
    """The MoE layer with one router and one expert pool per head."""

    @staticmethod
    def _make_router(layer: LayerShape, moe: MoEConfig) -> nn.Module:
        return nn.ModuleList(router_class(moe.router)(layer.d_sub, moe) for _ in range(layer.pools))

    def _route(self, x_Sd: torch.Tensor) -> RouterOutput:
        H, d = self.heads, x_Sd.shape[-1]
        x_NHd = x_Sd.view(-1, H, d)  # sub-tokens are token-major: head j of every token is [:, j]
        routers = cast(nn.ModuleList, self.router)
        heads: list[RouterOutput] = [router(x_NHd[:, j]) for j, router in enumerate(routers)]
        E = heads[0].probs_SE.shape[-1]

        def token_major(parts: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack(parts, 1).flatten(0, 1)

        # The telemetry sees the H E experts: a sub-token's logits and probabilities are its own
        # pool's, zero elsewhere (entropy H(p) = lse - sum p l is then the pool's entropy).
        N = x_NHd.shape[0]
        logits = heads[0].logits_SE.new_zeros(N, H, H * E)
        probs = heads[0].probs_SE.new_zeros(N, H, H * E)
        for j, out in enumerate(heads):
            logits[:, j, j * E:(j + 1) * E] = out.logits_SE.detach()  # telemetry only: the losses are per head
            probs[:, j, j * E:(j + 1) * E] = out.probs_SE.detach()
        keeps = [out.keep_SK for out in heads]
        return RouterOutput(
            gates_SK=token_major([out.gates_SK for out in heads]),
            experts_SK=token_major([out.experts_SK + j * E for j, out in enumerate(heads)]),
            keep_SK=None if all(k is None for k in keeps) else token_major(
                [k if k is not None else torch.ones_like(out.experts_SK, dtype=torch.bool)
                 for k, out in zip(keeps, heads)]),
            logits_SE=logits.flatten(0, 1), probs_SE=probs.flatten(0, 1),
            lse_S=token_major([out.lse_S for out in heads]),
            aux_loss=torch.stack([out.aux_loss for out in heads]).mean(),
            z_loss=torch.stack([out.z_loss for out in heads]).mean(),
        )


def per_head_ffn(arch: Architecture, is_moe_block: bool) -> nn.Module:
    """The per-head MoE layer in MoE blocks, the dense SwiGLU elsewhere."""
    if not is_moe_block:
        return DenseFFN(arch.model.d_model, arch.model.d_ff)
    return PerHeadMoELayer(arch)


__all__ = ["PerHeadMoELayer", "per_head_ffn"]
