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

from mhmoe.config.architecture import Architecture, MoEConfig
from mhmoe.config.variants import LayerShape
from mhmoe.model.experts import GroupedExperts, compute_dtype
from mhmoe.model.layers import SwiGLU, tag
from mhmoe.model.registry import router_class
from mhmoe.model.routing import RouterOutput, RoutingStats
from mhmoe.model.slots import from_slots, gates_in_slots, slot_layout, sort_by_expert, to_slots


class MoELayer(nn.Module):
    """Routed SwiGLU experts over H sub-tokens, with optional head/merge and shared expert."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        layer, moe = arch.layer, arch.moe
        assert layer is not None, f"model.ffn={arch.model.ffn!r} has no routed layer"
        self.cfg = moe
        self.heads = layer.heads
        d_model = layer.d_model
        self.head = self._projection(d_model, layer.head_proj, gain=2**-0.5, zero_bias=False)
        self.merge = self._projection(d_model, layer.merge_proj, gain=1.0, zero_bias=True)
        self.router = self._make_router(layer, moe)
        # Every pool's experts in one stack: pool p holds experts p E .. (p + 1) E - 1.
        self.experts = GroupedExperts(layer.pools * layer.num_experts, layer.d_sub, layer.expert_d_ff, moe.dispatch)
        self.shared = SwiGLU(d_model, moe.shared_expert_d_ff) if moe.shared_expert_d_ff else None

    @staticmethod
    def _make_router(layer: LayerShape, moe: MoEConfig) -> nn.Module:
        """One router over the shared pool (a variant with per-head pools overrides this and :meth:`_route`)."""
        return router_class(moe.router)(layer.d_sub, moe)

    def _route(self, x_Sd: torch.Tensor) -> RouterOutput:
        return self.router(x_Sd)

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
        S = x_Sd.shape[0]
        routing = self._route(x_Sd)
        experts_SK, keep_SK = routing.experts_SK, routing.keep_SK
        K = experts_SK.shape[1]

        # Assignment a = s*K + k. Sort the kept assignments by expert (stable: token order within),
        # lay them out in the experts' buffer, compute, and gather each sub-token's k rows back.
        routed_E = torch.bincount(experts_SK.reshape(-1), minlength=self.experts.num_experts)  # before dropping
        sorted_A, sorted_experts_A, counts_E = sort_by_expert(experts_SK, keep_SK, routed_E)
        kernel, rows_per_expert = self.experts.choose_kernel(counts_E, compute_dtype(x_Sd))
        layout = slot_layout(sorted_A, sorted_experts_A, counts_E, (S, K), rows_per_expert)
        y_Rd = self.experts(to_slots(x_Sd, layout), layout.counts_E, kernel)
        # Gate-weight each buffer row, then sum each sub-token's k rows (dropped ones add zero).
        y_Sd = from_slots(y_Rd * gates_in_slots(routing.gates_SK, layout).to(y_Rd.dtype), layout)

        stats = routing.stats(self.heads, cfg.activation_threshold, tokens_E=routed_E)
        return y_Sd.to(x_Sd.dtype), stats
