"""BitNet quantization as a post-build converter (docs/MODEL.md, BitNet b1.58).

:func:`convert_to_bitnet` walks a built model and swaps the modules whose ``quant_role`` the
:class:`~mhmoe.config.architecture.QuantConfig` selects for quantized subclasses that share their parameters
(state dicts stay compatible). Layers never branch on quantization.

Weights: 1.58 bits = ternary absmean per tensor (BitNet b1.58: round(W / mean|W|) clipped to
{-1, 0, 1}); 2 bits = absmean with levels {-2, -1, 0, 1}; 4 and 8 bits = absmax symmetric
with levels {-(2^(b-1)-1) ... 2^(b-1)-1}. Expert weights get one scale per expert and matrix.
Activations: absmax per token (last dim) to signed ``activation_bits`` integers.
Gradients pass straight through (STE: ``x + (q(x) - x).detach()``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mhmoe.config.architecture import QuantConfig
from mhmoe.model.experts import GroupedExperts
from mhmoe.model.layers import RMSNorm, TokenEmbedding

_EPS = 1e-5


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return x + (q - x).detach()


def weight_levels(bits: float) -> tuple[int, int]:
    """Integer range (low, high) a weight of this bit-width is rounded into."""
    if bits == 1.58:
        return -1, 1
    if bits == 2:
        return -2, 1
    high = 2 ** (int(bits) - 1) - 1
    return -high, high


def quantize_weight(w: torch.Tensor, bits: float, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """Fake-quantize ``w`` (values stay float) with one scale per slice over ``dims`` (None = tensor)."""
    low, high = weight_levels(bits)
    keep = dims is not None
    if bits <= 2:  # absmean scaling (BitNet b1.58 and its 2-bit extension)
        gamma = w.abs().mean(dim=dims, keepdim=keep) if keep else w.abs().mean()
        scale = 1.0 / gamma.clamp_min(_EPS)
    else:  # absmax scaling
        peak = w.abs().amax(dim=dims, keepdim=True) if dims is not None else w.abs().max()
        scale = high / peak.clamp_min(_EPS)
    q = (w * scale).round().clamp(low, high) / scale
    return _ste(w, q)


def quantize_activation(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Fake-quantize activations absmax per token (last dim) to signed ``bits`` integers."""
    if bits >= 16:
        return x
    high = 2 ** (bits - 1) - 1
    scale = high / x.abs().amax(dim=-1, keepdim=True).clamp_min(_EPS)
    q = (x * scale).round().clamp(-high - 1, high) / scale
    return _ste(x, q)


class BitLinear(nn.Linear):
    """nn.Linear with fake-quantized weights and per-token activations; optional SubLN norm."""

    weight_bits: float = 1.58
    activation_bits: int = 8
    sub_norm: nn.Module  # set by the converter (SubLN or identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = quantize_activation(self.sub_norm(x), self.activation_bits)
        return F.linear(x, quantize_weight(self.weight, self.weight_bits), self.bias)


class BitGroupedExperts(GroupedExperts):
    """Experts with per-expert, per-matrix weight scales and per-row activation quantization."""

    weight_bits: float = 1.58
    activation_bits: int = 8
    sub_norm: nn.Module  # set by the converter (per-expert SubLN or identity)

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # One scale per expert and matrix, as each expert Linear is quantized in the official code.
        w1, w3, w2 = (quantize_weight(w, self.weight_bits, (1, 2)) for w in (self.w1, self.w3, self.w2))
        return w1, w3, w2

    def _rows_in(self, x_AD: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        return quantize_activation(x_AD, self.activation_bits)

    def _rows_mid(self, h_AF: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        return quantize_activation(self.sub_norm(h_AF, counts_E), self.activation_bits)


class ExpertSubLN(nn.Module):
    """SubLN inside experts: RMSNorm before the down projection with one gain vector per expert."""

    def __init__(self, num_experts: int, d_ff: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_experts, d_ff))

    def forward(self, h_AF: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        expert_A = torch.repeat_interleave(torch.arange(len(counts_E), device=h_AF.device), counts_E,
                                           output_size=h_AF.shape[0])
        h32 = h_AF.float()
        normed = h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(h_AF) * self.weight[expert_A]


class _NoExpertNorm(nn.Module):
    def forward(self, h_AF: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        return h_AF


class BitEmbedding(TokenEmbedding):
    """Token embedding / tied LM head with a fake-quantized table."""

    weight_bits: float = 1.58

    def table(self) -> torch.Tensor:
        return quantize_weight(self.weight, self.weight_bits)


def selected_roles(quant: QuantConfig) -> set[str]:
    """The ``quant_role`` values a config quantizes (official default: attention + all FFNs)."""
    roles = set()
    if quant.quantize_attention:
        roles |= {"attention", "attention_out"}
    if quant.quantize_ffn:
        roles |= {"ffn", "ffn_down", "expert"}
    if quant.quantize_router:
        roles.add("router")
    if quant.quantize_head_merge:
        roles.add("head_merge")
    if quant.quantize_embeddings:
        roles.add("embedding")
    return roles


def _convert_module(module: nn.Module, quant: QuantConfig) -> None:
    """Swap the class of one module in place; parameters and their identities are kept."""
    role = getattr(module, "quant_role", None)
    if isinstance(module, GroupedExperts):
        module.__class__ = BitGroupedExperts
        module.sub_norm = ExpertSubLN(module.num_experts, module.d_ff).to(module.w2) if quant.subln else _NoExpertNorm()
    elif isinstance(module, TokenEmbedding):
        module.__class__ = BitEmbedding
    elif isinstance(module, nn.Linear):
        module.__class__ = BitLinear
        down = role in ("attention_out", "ffn_down")
        module.sub_norm = RMSNorm(module.in_features).to(module.weight) if (quant.subln and down) else nn.Identity()
    else:
        return
    converted: Any = module  # one of the Bit* classes now
    converted.weight_bits = quant.weight_bits
    converted.activation_bits = quant.activation_bits


def convert_to_bitnet(model: nn.Module, quant: QuantConfig) -> nn.Module:
    """Quantize, in place, every module whose ``quant_role`` the config selects; returns model."""
    if not quant.enabled:
        return model
    roles = selected_roles(quant)
    targets = [m for m in model.modules() if getattr(m, "quant_role", None) in roles]
    for module in targets:
        if isinstance(module, (nn.Linear, TokenEmbedding, GroupedExperts)):
            _convert_module(module, quant)
    return model
