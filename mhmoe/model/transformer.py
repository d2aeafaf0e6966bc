"""Decoder-only transformer with a pluggable FFN per block (docs/MODEL.md). No Lightning here.

Block i carries the MoE FFN when ``model.is_moe_block(i)``; the FFN module comes from the builder
:data:`mhmoe.config.variants.VARIANTS` names for ``model.ffn`` (:mod:`mhmoe.model.ffn`), so configs stay
plain strings. The model takes an :class:`~mhmoe.config.architecture.Architecture`, validated once.

Shape legend: B batch, T sequence, D model dim, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mhmoe.config.architecture import Architecture
from mhmoe.model.layers import CausalSelfAttention, RMSNorm, TokenEmbedding, rope_tables, tag
from mhmoe.model.moe import MoELayer
from mhmoe.model.quantization import convert_to_bitnet
from mhmoe.model.registry import ffn_builder, ffn_registry
from mhmoe.model.routing import RoutingStats

FFN_REGISTRY = ffn_registry()
"""``model.ffn -> FFN builder`` for every variant of :mod:`mhmoe.config.variants`."""


class Block(nn.Module):
    def __init__(self, arch: Architecture, index: int) -> None:
        super().__init__()
        model = arch.model
        self.index = index
        self.attn_norm = RMSNorm(model.d_model, model.norm_eps)
        self.attn = CausalSelfAttention(model.d_model, model.n_heads)
        self.ffn_norm = RMSNorm(model.d_model, model.norm_eps)
        self.ffn = ffn_builder(model.ffn)(arch, model.is_moe_block(index))

    def forward(self, x_BTD: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> tuple[torch.Tensor, RoutingStats | None]:
        x_BTD = x_BTD + self.attn(self.attn_norm(x_BTD), cos, sin)
        ffn_out, stats = self.ffn(self.ffn_norm(x_BTD))
        return x_BTD + ffn_out, stats


@dataclass
class ModelOutput:
    logits: torch.Tensor
    """(B, T, V) next-token logits."""
    aux_loss: torch.Tensor
    """Sum over MoE layers of aux_loss_coef * load-balancing loss + z_loss_coef * z-loss."""
    routing: dict[int, RoutingStats] = field(default_factory=dict)
    """Routing telemetry keyed by 0-based block index of each MoE block."""

    @property
    def lb_loss(self) -> torch.Tensor:
        """Unscaled load-balancing loss summed over MoE layers."""
        return sum((s.aux_loss for s in self.routing.values()), self.logits.new_zeros(()))

    @property
    def z_loss(self) -> torch.Tensor:
        """Unscaled router z-loss summed over MoE layers."""
        return sum((s.z_loss for s in self.routing.values()), self.logits.new_zeros(()))


class Transformer(nn.Module):
    """Pre-norm decoder: embed -> blocks -> RMSNorm -> tied LM head.

    Takes a validated :class:`~mhmoe.config.architecture.Architecture` (its quant is applied by :func:`build_model`).
    """

    def __init__(self, arch: Architecture, *, activation_checkpointing: bool = False) -> None:
        super().__init__()
        model, moe = arch.model, arch.moe
        self.model_cfg, self.moe_cfg = model, moe
        self.activation_checkpointing = activation_checkpointing
        """Recompute each block in backward (training only) instead of keeping its activations."""
        self.tok_emb = TokenEmbedding(model.vocab_size, model.d_model)
        nn.init.normal_(self.tok_emb.weight, std=model.init_std)
        self.blocks = nn.ModuleList(Block(arch, i) for i in range(model.n_layers))
        self.norm = RMSNorm(model.d_model, model.norm_eps)
        self.lm_head = None if model.tie_embeddings else tag(nn.Linear(model.d_model, model.vocab_size, bias=False),
                                                             "embedding")
        cos, sin = rope_tables(model.head_dim, model.max_seq_len, model.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, idx_BT: torch.Tensor) -> ModelOutput:
        x_BTD = self.tok_emb(idx_BT)
        routing: dict[int, RoutingStats] = {}
        checkpointing = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.block_list():
            if checkpointing:
                x_BTD, stats = checkpoint(block, x_BTD, self.rope_cos, self.rope_sin, use_reentrant=False)
            else:
                x_BTD, stats = block(x_BTD, self.rope_cos, self.rope_sin)
            if stats is not None:
                routing[block.index] = stats
        x_BTD = self.norm(x_BTD)
        weight = self.tok_emb.table() if self.lm_head is None else self.lm_head.weight
        logits_BTV = F.linear(x_BTD, weight)
        aux = logits_BTV.new_zeros(())
        for stats in routing.values():
            aux = aux + self.moe_cfg.aux_loss_coef * stats.aux_loss + self.moe_cfg.z_loss_coef * stats.z_loss
        return ModelOutput(logits=logits_BTV, aux_loss=aux, routing=routing)

    def block_list(self) -> list[Block]:
        """The blocks, typed (``nn.ModuleList`` items are plain modules to a type checker)."""
        return cast(list[Block], list(self.blocks))

    def moe_layers(self) -> dict[int, MoELayer]:
        return {b.index: b.ffn for b in self.block_list() if isinstance(b.ffn, MoELayer)}


def build_model(arch: Architecture, *, activation_checkpointing: bool = False) -> Transformer:
    """Build the transformer of an Architecture, then apply the BitNet converter when quantization is on."""
    net = Transformer(arch, activation_checkpointing=activation_checkpointing)
    if arch.quant.enabled:
        convert_to_bitnet(net, arch.quant)
    return net
