"""Routers over (sub-)tokens: gates, capacity, load-balancing losses and telemetry.

A router is an ``nn.Module`` built as ``cls(d_in, moe_config)`` whose forward maps (S, d) sub-tokens
to a :class:`RouterOutput`: which experts each sub-token goes to, with what gate, and which of
those assignments are kept (capacity dropping is the router's decision). ``moe.router`` picks the
class from :data:`mhmoe.config.variants.ROUTERS`; :class:`TopKRouter` (``topk``) is the official one.

Shape legend: S routed (sub-)tokens, E experts, K top-k, N whole tokens, H MH-MoE heads.
Every statistic stays a detached device tensor, so routing adds no host sync to the hot path;
the training loop decides when to read them. Definitions of every statistic: docs/ROUTING.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
from torch import nn
from torch.func import functional_call

from mhmoe.config.architecture import MoEConfig
from mhmoe.model.layers import tag

RANGE = "range"
"""Field metadata key of a :class:`RoutingStats` field that is logged as a metric: its ``(low, high)``."""


def logged(low: float, high: float = math.inf) -> dict[str, tuple[float, float]]:
    """Metadata of a :class:`RoutingStats` field the training loop logs as ``routing/layer_<block>/<name>``
    and ``routing/mean/<name>``, whose values lie in ``[low, high]`` (the report clips intervals to it)."""
    return {RANGE: (low, high)}


@dataclass
class RoutingStats:
    """Routing telemetry of one MoE layer for one forward pass (0-d tensors unless noted).

    A field with :func:`logged` metadata is a metric (:data:`LOGGED_STATS`); the others are read by the
    training loop directly (load and divergence artifacts, the loss terms).
    """

    tokens_per_expert: torch.Tensor
    """(E,) assignments routed to each expert (all k choices, before capacity dropping)."""
    load_imbalance: torch.Tensor = field(metadata=logged(1.0))
    """max / mean of tokens_per_expert; 1.0 is perfectly balanced."""
    entropy: torch.Tensor = field(metadata=logged(0.0))
    """Mean over sub-tokens of the router distribution's entropy (nats)."""
    activation_ratio: torch.Tensor = field(metadata=logged(0.0, 1.0))
    """Fraction of experts whose load is >= activation_threshold x the uniform share."""
    dropped_frac: torch.Tensor = field(metadata=logged(0.0, 1.0))
    """Fraction of assignments dropped by the capacity rule (0 when dropless)."""
    divergence: torch.Tensor = field(metadata=logged(1.0))
    """Mean over tokens of distinct top-1 experts among the token's H sub-tokens (1..H)."""
    divergence_hist: torch.Tensor
    """(H,) count of tokens whose sub-tokens reached j+1 distinct top-1 experts."""
    aux_loss: torch.Tensor
    """Unscaled GShard/Switch load-balancing loss E * sum_e mean_prob_e * frac_top1_e (min 1).
    Differentiable (the training objective uses it); detach before logging."""
    z_loss: torch.Tensor
    """Unscaled router z-loss mean(logsumexp(logits)^2)."""


LOGGED_STATS: dict[str, tuple[float, float]] = {f.name: f.metadata[RANGE] for f in fields(RoutingStats)
                                                if RANGE in f.metadata}
"""Name -> value range of every logged routing statistic, in field order (the one list of them)."""


@dataclass
class RouterOutput:
    """What a router decided for S sub-tokens, and what the telemetry and the losses read."""

    gates_SK: torch.Tensor
    """(S, K) weight of each chosen expert in the sub-token's output."""
    experts_SK: torch.Tensor
    """(S, K) chosen expert ids; column 0 is the first choice."""
    keep_SK: torch.Tensor | None
    """(S, K) bool, False where capacity dropped the assignment; None: every assignment is kept."""
    logits_SE: torch.Tensor
    """(S, E) fp32 router logits."""
    probs_SE: torch.Tensor
    """(S, E) router distribution over all experts."""
    lse_S: torch.Tensor
    """(S,) logsumexp of the logits (z-loss and entropy share it)."""
    aux_loss: torch.Tensor
    """Unscaled load-balancing loss (differentiable)."""
    z_loss: torch.Tensor
    """Unscaled router z-loss (differentiable)."""

    def stats(self, heads: int, activation_threshold: float, tokens_E: torch.Tensor | None = None) -> RoutingStats:
        """The layer's :class:`RoutingStats` of this routing decision."""
        return routing_stats(
            self.logits_SE, self.probs_SE, self.lse_S, self.experts_SK, self.keep_SK, heads, activation_threshold,
            self.aux_loss, self.z_loss, tokens_E=tokens_E,
        )


class TopKRouter(nn.Module):
    """Token choice (``moe.router=topk``): a bias-free linear router whose logits and softmax run
    in fp32 as in the official code; each sub-token takes its top-k experts, and in capacity mode
    the official first-come capacity rule drops the overflow."""

    quant_role = "router"

    def __init__(self, d_in: int, moe: MoEConfig) -> None:
        super().__init__()
        self.cfg = moe
        self.gate = tag(nn.Linear(d_in, moe.num_experts, bias=False), "router")

    def logits(self, x_Sd: torch.Tensor) -> torch.Tensor:
        # fp32 at least, whatever the activations' and the parameters' dtype: parameters stay fp32
        # under mixed precision, but a model cast to bf16/fp16 for evaluation has a bf16/fp16 gate
        # (float64 models route in float64). Through the module, with its weight cast, not by
        # F.linear on the weight: the BitNet converter may have swapped the gate for a quantized
        # one (quant.quantize_router), whose forward quantizes the weight it is given.
        dtype = torch.promote_types(self.gate.weight.dtype, torch.float32)
        with torch.autocast(device_type=x_Sd.device.type, enabled=False):
            if dtype == self.gate.weight.dtype:  # training: the gate as it is
                return self.gate(x_Sd.to(dtype))  # (S, E)
            weights = {name: p.to(dtype) for name, p in self.gate.named_parameters()}
            return functional_call(self.gate, weights, (x_Sd.to(dtype),))  # (S, E)

    def forward(self, x_Sd: torch.Tensor) -> RouterOutput:
        cfg = self.cfg
        logits_SE = self.logits(x_Sd)
        probs_SE, gates_SK, experts_SK = top_k_gates(logits_SE, cfg.top_k, cfg.normalize_gates)
        lse_S = torch.logsumexp(logits_SE, dim=-1)
        return RouterOutput(
            gates_SK=gates_SK, experts_SK=experts_SK, keep_SK=self._capacity_mask(experts_SK),
            logits_SE=logits_SE, probs_SE=probs_SE, lse_S=lse_S,
            aux_loss=load_balancing_loss(probs_SE, experts_SK), z_loss=lse_S.pow(2).mean(),
        )

    def _capacity_mask(self, experts_SK: torch.Tensor) -> torch.Tensor | None:
        cfg = self.cfg
        if cfg.capacity_mode != "capacity" or not (self.training or cfg.drop_at_eval):
            return None
        capacity = expert_capacity(experts_SK.shape[0], cfg.num_experts, cfg.top_k, cfg.capacity_factor)
        return capacity_keep_mask(experts_SK, cfg.num_experts, capacity)


def top_k_gates(
    logits_SE: torch.Tensor, top_k: int, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax over all experts, take the top k; renormalise the k gates when k > 1 and asked."""
    probs_SE = logits_SE.softmax(dim=-1)
    gates_SK, experts_SK = probs_SE.topk(top_k, dim=-1)
    if normalize and top_k > 1:
        gates_SK = gates_SK / gates_SK.sum(dim=-1, keepdim=True)
    return probs_SE, gates_SK, experts_SK


def load_balancing_loss(probs_SE: torch.Tensor, experts_SK: torch.Tensor) -> torch.Tensor:
    """Official gshard_loss: E * sum_e mean_prob_e * frac_top1_e; only the top-1 choice counts."""
    S, E = probs_SE.shape
    frac_top1_E = torch.bincount(experts_SK[:, 0], minlength=E).to(probs_SE.dtype) / S
    return E * (probs_SE.mean(dim=0) * frac_top1_E).sum()


def expert_capacity(num_routed: int, num_experts: int, top_k: int, factor: float) -> int:
    """Official rule: capacity = k * ceil(S / E), scaled by the capacity factor."""
    return max(1, int(top_k * math.ceil(num_routed / num_experts) * factor))


def capacity_keep_mask(experts_SK: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """(S, K) bool: which assignments fit, first-come in token order, k-th choices behind (k-1)-th.

    A stable sort of the k-major flattened choices by expert gives each assignment its queue
    position inside its expert without any one-hot tensor.
    """
    S, K = experts_SK.shape
    flat_KS = experts_SK.t().reshape(-1)  # all 1st choices in token order, then all 2nd ...
    order = torch.argsort(flat_KS, stable=True)
    counts_E = torch.bincount(flat_KS, minlength=num_experts)
    starts_E = torch.cumsum(counts_E, 0) - counts_E
    position_sorted = torch.arange(flat_KS.numel(), device=flat_KS.device) - starts_E[flat_KS[order]]
    position_KS = torch.empty_like(position_sorted)
    position_KS[order] = position_sorted
    return (position_KS < capacity).view(K, S).t()


def sub_token_divergence(top1_NH: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct experts among each token's H sub-token top-1 choices: (mean, (H,) histogram)."""
    N, H = top1_NH.shape
    sorted_NH = top1_NH.sort(dim=1).values
    distinct_N = 1 + (sorted_NH[:, 1:] != sorted_NH[:, :-1]).sum(dim=1)
    hist_H = torch.bincount(distinct_N - 1, minlength=H)
    return distinct_N.float().mean(), hist_H


@torch.no_grad()
def routing_stats(
    logits_SE: torch.Tensor,
    probs_SE: torch.Tensor,
    lse_S: torch.Tensor,
    experts_SK: torch.Tensor,
    keep_SK: torch.Tensor | None,
    heads: int,
    activation_threshold: float,
    aux_loss: torch.Tensor,
    z_loss: torch.Tensor,
    tokens_E: torch.Tensor | None = None,
) -> RoutingStats:
    """``tokens_E``: assignments per expert if the caller already counted them (the MoE layer does)."""
    S, E = probs_SE.shape
    assignments = experts_SK.numel()
    if tokens_E is None:
        tokens_E = torch.bincount(experts_SK.reshape(-1), minlength=E)
    tokens_E = tokens_E.float()
    uniform = assignments / E
    # H(p) = logsumexp(l) - sum_e p_e l_e: reuses the z-loss logsumexp, no log over (S, E).
    entropy = (lse_S - (probs_SE * logits_SE).sum(-1)).mean()
    dropped = probs_SE.new_zeros(()) if keep_SK is None else 1.0 - keep_SK.float().mean()
    divergence, hist = sub_token_divergence(experts_SK[:, 0].view(S // heads, heads))
    return RoutingStats(
        tokens_per_expert=tokens_E,
        load_imbalance=tokens_E.max() / uniform,
        entropy=entropy,
        activation_ratio=(tokens_E >= activation_threshold * uniform).float().mean(),
        dropped_frac=dropped,
        divergence=divergence,
        divergence_hist=hist,
        aux_loss=aux_loss,
        z_loss=z_loss,
    )
