"""The routed FFN for every MoE variant: SMoE, fine-grained SMoE and MH-MoE (docs/MODEL.md).

MH-MoE: head Linear(D, D) -> split each token into H sub-tokens of size D/H -> top-k routing of
every sub-token -> SwiGLU experts -> gate-weighted sum -> concat -> merge Linear(D, D). With
H = 1 and head/merge off this is exactly a plain SMoE. The residual is added by the block.

The router (``moe.router``, :mod:`mhmoe.model.routing`) decides gates, experts and which
assignments capacity keeps; this layer only sorts the kept assignments by expert, computes the
experts and combines their outputs.

Shape legend: B batch, T sequence, D model dim, N = B*T tokens, H MH-MoE heads, d = D/H,
S = N*H routed sub-tokens, E experts, K top-k, A routed assignments.
"""

from __future__ import annotations

import torch
from torch import nn

from mhmoe.config import MoEConfig
from mhmoe.model.experts import GroupedExperts
from mhmoe.model.layers import SwiGLU, tag
from mhmoe.model.registry import router_class
from mhmoe.model.routing import RoutingStats


class MoELayer(nn.Module):
    """Routed SwiGLU experts over H sub-tokens, with optional head/merge and shared expert."""

    def __init__(self, d_model: int, moe: MoEConfig, ffn: str) -> None:
        super().__init__()
        self.cfg = moe
        self.heads = moe.heads
        d_sub = d_model // moe.heads
        self.head = self._projection(d_model, moe.uses_head_proj(ffn), gain=2**-0.5, zero_bias=False)
        self.merge = self._projection(d_model, moe.uses_merge_proj(ffn), gain=1.0, zero_bias=True)
        self.router = router_class(moe.router)(d_sub, moe)
        self.experts = GroupedExperts(moe.num_experts, d_sub, moe.expert_d_ff, moe.dispatch)
        self.shared = SwiGLU(d_model, moe.shared_expert_d_ff) if moe.shared_expert_d_ff else None
        # Training-only load counter (sub-token assignments per expert); eval never touches it.
        self.register_buffer("train_tokens_per_expert", torch.zeros(moe.num_experts), persistent=False)
        self.count_load = True
        """Off while activation checkpointing recomputes this layer (the tokens were counted once)."""

    @staticmethod
    def _projection(d_model: int, enabled: bool, gain: float, zero_bias: bool) -> nn.Module:
        if not enabled:
            return nn.Identity()
        proj = tag(nn.Linear(d_model, d_model, bias=True), "head_merge")
        nn.init.xavier_uniform_(proj.weight, gain=gain)  # official init: head 1/sqrt(2), merge 1
        if zero_bias:
            nn.init.zeros_(proj.bias)
        return proj

    def forward(self, x_BTD: torch.Tensor) -> tuple[torch.Tensor, RoutingStats]:
        B, T, D = x_BTD.shape
        x_ND = x_BTD.reshape(B * T, D)
        x_Sd = self.head(x_ND).reshape(B * T * self.heads, D // self.heads)  # token-major sub-tokens
        y_Sd, stats = self._route_and_compute(x_Sd)
        y_ND = self.merge(y_Sd.reshape(B * T, D))  # concat the H sub-token outputs, then merge
        if self.shared is not None:
            y_ND = y_ND + self.shared(x_ND)
        return y_ND.view(B, T, D), stats

    def _route_and_compute(self, x_Sd: torch.Tensor) -> tuple[torch.Tensor, RoutingStats]:
        cfg = self.cfg
        S, d = x_Sd.shape
        routing = self.router(x_Sd)
        experts_SK, keep_SK = routing.experts_SK, routing.keep_SK
        K = experts_SK.shape[1]

        # Assignment a = s*K + k. Sort the kept assignments by expert (stable: token order within).
        expert_A = experts_SK.reshape(-1)
        routed_E = torch.bincount(expert_A, minlength=cfg.num_experts)  # before dropping: telemetry
        if keep_SK is None:  # dropless: every assignment is kept, the sort order is the assignment list
            assignment_sorted_A = torch.argsort(expert_A, stable=True)
            counts_E = routed_E
        else:
            assignment_A = torch.arange(S * K, device=x_Sd.device)[keep_SK.reshape(-1)]
            expert_A = expert_A[assignment_A]
            assignment_sorted_A = assignment_A[torch.argsort(expert_A, stable=True)]
            counts_E = torch.bincount(expert_A, minlength=cfg.num_experts)

        # index_select (backward: index_add) is several times faster than advanced indexing
        # (backward: accumulating index_put) on CPU.
        y_Ad = self.experts(x_Sd.index_select(0, assignment_sorted_A // K), counts_E)
        y_SKd = self._unsort(y_Ad, assignment_sorted_A, S * K)
        # Deterministic combine: each (sub-token, choice) owns one row; weight by gates, sum over K.
        y_Sd = (y_SKd.view(S, K, d) * routing.gates_SK.unsqueeze(-1).to(y_SKd.dtype)).sum(dim=1)

        stats = routing.stats(self.heads, cfg.activation_threshold, tokens_E=routed_E)
        if self.training and self.count_load:
            self.train_tokens_per_expert += stats.tokens_per_expert
        return y_Sd.to(x_Sd.dtype), stats

    @staticmethod
    def _unsort(y_Ad: torch.Tensor, assignment_sorted_A: torch.Tensor, num_assignments: int) -> torch.Tensor:
        """Rows back to assignment order; dropped assignments read an appended zero row."""
        A = y_Ad.shape[0]
        source_SK = torch.full((num_assignments,), A, dtype=torch.long, device=y_Ad.device)
        source_SK[assignment_sorted_A] = torch.arange(A, device=y_Ad.device)
        if A < num_assignments:
            y_Ad = torch.nn.functional.pad(y_Ad, (0, 0, 0, 1))
        return y_Ad.index_select(0, source_SK)
