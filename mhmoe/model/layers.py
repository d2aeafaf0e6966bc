"""Backbone layers: RMSNorm, rotary embeddings, causal attention, SwiGLU.

Shape legend: B batch, T sequence, D model dim, H attention heads, d head dim, F FFN hidden.
Linear layers carry a ``quant_role`` attribute that the BitNet converter reads to decide what
to quantize (``attention``, ``attention_out``, ``ffn``, ``ffn_down``); layers never branch on it.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def tag(module: ModuleT, role: str) -> ModuleT:
    """Mark a module with the role the quantization converter keys on."""
    module.quant_role = role  # type: ignore[assignment]  # Module.__setattr__ is typed for tensors/modules
    return module


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain, computed in fp32 for stability."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rope_tables(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (max_len, head_dim // 2) for rotary embeddings."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles_TF = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
    return angles_TF.cos(), angles_TF.sin()


def apply_rope(x_BHTd: torch.Tensor, cos_Tf: torch.Tensor, sin_Tf: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of each head dim (the LLaMA "rotate half" layout)."""
    half = x_BHTd.shape[-1] // 2
    x1, x2 = x_BHTd[..., :half], x_BHTd[..., half:]
    cos, sin = cos_Tf.to(x_BHTd.dtype), sin_Tf.to(x_BHTd.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with RoPE and no biases, via scaled_dot_product_attention."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.wq = tag(nn.Linear(d_model, d_model, bias=False), "attention")
        self.wk = tag(nn.Linear(d_model, d_model, bias=False), "attention")
        self.wv = tag(nn.Linear(d_model, d_model, bias=False), "attention")
        self.wo = tag(nn.Linear(d_model, d_model, bias=False), "attention_out")

    def forward(self, x_BTD: torch.Tensor, cos_Tf: torch.Tensor, sin_Tf: torch.Tensor) -> torch.Tensor:
        B, T, D = x_BTD.shape
        H = self.n_heads
        q = self.wq(x_BTD).view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, d)
        k = self.wk(x_BTD).view(B, T, H, D // H).transpose(1, 2)
        v = self.wv(x_BTD).view(B, T, H, D // H).transpose(1, 2)
        q, k = apply_rope(q, cos_Tf[:T], sin_Tf[:T]), apply_rope(k, cos_Tf[:T], sin_Tf[:T])
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, D))  # re-assemble heads side by side


class _SiluGate(torch.autograd.Function):
    """``silu(gate) * up`` whose backward writes the two gradients over its saved (A, F) tensors
    instead of allocating three new ones: hidden activations are an FFN's largest tensors (in an
    MH-MoE layer 2.25x the dense FFN's), and on CPU each fresh allocation of that size costs page
    faults (benchmarks/RESULTS.md).
    A second backward through the same graph fails loudly (the saved tensors' versions changed)."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:  # ctx: FunctionCtx
        silu = F.silu(gate)
        ctx.save_for_backward(gate, up, silu)
        return silu * up

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate, up, silu = ctx.saved_tensors
        grad_up = silu.mul_(grad)
        grad_gate = torch.ops.aten.silu_backward.grad_input(up.mul_(grad), gate, grad_input=gate)
        return grad_gate, grad_up


def silu_gate(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``F.silu(gate) * up`` (the SwiGLU hidden activation); in place in backward when it may be.
    Compiled graphs get the plain expression: inductor fuses it, and it needs no in-place trick."""
    needs_grad = torch.is_grad_enabled() and (gate.requires_grad or up.requires_grad)
    if not torch.compiler.is_compiling() and needs_grad and gate.shape == up.shape:
        return _SiluGate.apply(gate, up)
    return F.silu(gate) * up


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x), no biases: the dense FFN, the shared expert."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.w1 = tag(nn.Linear(d_model, d_ff, bias=False), "ffn")
        self.w3 = tag(nn.Linear(d_model, d_ff, bias=False), "ffn")
        self.w2 = tag(nn.Linear(d_ff, d_model, bias=False), "ffn_down")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(silu_gate(self.w1(x), self.w3(x)))


class TokenEmbedding(nn.Embedding):
    """Token embedding whose table also serves as the tied output projection.

    ``table()`` is the hook the BitNet converter overrides when embeddings are quantized.
    """

    quant_role = "embedding"

    def table(self) -> torch.Tensor:
        return self.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.table())
