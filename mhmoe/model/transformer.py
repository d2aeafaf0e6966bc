"""Decoder-only transformer with a pluggable FFN per block (docs/MODEL.md). No Lightning here.

Block i carries the MoE FFN when ``model.is_moe_block(i)``; the FFN class comes from a small
registry keyed by ``model.ffn`` so configs stay plain strings.

Shape legend: B batch, T sequence, D model dim, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mhmoe.config import ModelConfig, MoEConfig, QuantConfig, check_architecture
from mhmoe.model.layers import CausalSelfAttention, RMSNorm, SwiGLU, TokenEmbedding, rope_tables
from mhmoe.model.moe import MoELayer
from mhmoe.model.quantization import convert_to_bitnet
from mhmoe.model.routing import RoutingStats

FFNBuilder = Callable[[ModelConfig, MoEConfig, bool], nn.Module]
FFN_REGISTRY: dict[str, FFNBuilder] = {}


def register_ffn(name: str) -> Callable[[FFNBuilder], FFNBuilder]:
    def decorator(builder: FFNBuilder) -> FFNBuilder:
        assert name not in FFN_REGISTRY, f"FFN variant {name!r} registered twice"
        FFN_REGISTRY[name] = builder
        return builder

    return decorator


class DenseFFN(SwiGLU):
    """Dense SwiGLU with the MoE layer's (output, stats) interface; stats is None."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return super().forward(x), None


@register_ffn("dense")
def _dense(model: ModelConfig, moe: MoEConfig, is_moe_block: bool) -> nn.Module:
    return DenseFFN(model.d_model, model.d_ff)


def _routed(model: ModelConfig, moe: MoEConfig, is_moe_block: bool) -> nn.Module:
    if not is_moe_block:
        return DenseFFN(model.d_model, model.d_ff)
    return MoELayer(model.d_model, moe, model.ffn)


# SMoE, fine-grained SMoE and MH-MoE share one layer: they differ only in config (heads,
# segmentation, head/merge), which check_architecture constrains per variant.
for _name in ("smoe", "fine_grained", "mhmoe"):
    register_ffn(_name)(_routed)


class Block(nn.Module):
    def __init__(self, model: ModelConfig, moe: MoEConfig, index: int) -> None:
        super().__init__()
        self.index = index
        self.attn_norm = RMSNorm(model.d_model, model.norm_eps)
        self.attn = CausalSelfAttention(model.d_model, model.n_heads)
        self.ffn_norm = RMSNorm(model.d_model, model.norm_eps)
        self.ffn = FFN_REGISTRY[model.ffn](model, moe, model.is_moe_block(index))

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
    """Pre-norm decoder: embed -> blocks -> RMSNorm -> tied LM head."""

    def __init__(self, model: ModelConfig, moe: MoEConfig, *, activation_checkpointing: bool = False) -> None:
        super().__init__()
        check_architecture(model, moe)
        self.model_cfg, self.moe_cfg = model, moe
        self.activation_checkpointing = activation_checkpointing
        """Recompute each block in backward (training only) instead of keeping its activations."""
        self.tok_emb = TokenEmbedding(model.vocab_size, model.d_model)
        nn.init.normal_(self.tok_emb.weight, std=model.init_std)
        self.blocks = nn.ModuleList(Block(model, moe, i) for i in range(model.n_layers))
        self.norm = RMSNorm(model.d_model, model.norm_eps)
        self.lm_head = None if model.tie_embeddings else nn.Linear(model.d_model, model.vocab_size, bias=False)
        if self.lm_head is not None:
            self.lm_head.quant_role = "embedding"
        cos, sin = rope_tables(model.head_dim, model.max_seq_len, model.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, idx_BT: torch.Tensor) -> ModelOutput:
        x_BTD = self.tok_emb(idx_BT)
        routing: dict[int, RoutingStats] = {}
        checkpointing = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if checkpointing:
                x_BTD, stats = checkpoint(block, x_BTD, self.rope_cos, self.rope_sin, use_reentrant=False,
                                          context_fn=partial(_recompute_context, block))
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

    def moe_layers(self) -> dict[int, MoELayer]:
        return {b.index: b.ffn for b in self.blocks if isinstance(b.ffn, MoELayer)}


@contextmanager
def _counting_paused(block: Block) -> Iterator[None]:
    """Recomputing a block in backward must not count its routed tokens a second time."""
    ffn = block.ffn
    if not isinstance(ffn, MoELayer):
        yield
        return
    ffn.count_load = False
    try:
        yield
    finally:
        ffn.count_load = True


def _recompute_context(block: Block) -> tuple[AbstractContextManager, AbstractContextManager]:
    """torch.utils.checkpoint ``context_fn``: (forward context, recomputation context)."""
    return nullcontext(), _counting_paused(block)


def build_model(model: ModelConfig, moe: MoEConfig, quant: QuantConfig | None = None, *,
                activation_checkpointing: bool = False) -> Transformer:
    """Build the transformer, then apply the BitNet converter when quantization is on."""
    net = Transformer(model, moe, activation_checkpointing=activation_checkpointing)
    if quant is not None and quant.enabled:
        convert_to_bitnet(net, quant)
    return net
