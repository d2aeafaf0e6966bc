"""MH-MoE with experts per head (mhmoe/model/per_head.py): head j's sub-tokens are routed by head j's
router among head j's own experts. Building, training, budget parity and matching are covered by the
registry-parametrized model tests; this file checks what only this variant does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mhmoe.model.per_head import PerHeadMoELayer
from mhmoe.sizing.budget import count_params
from tests.model.fixtures import arch, tiny_model, tiny_moe


def test_each_head_routes_to_its_own_pool_with_its_own_router() -> None:
    torch.manual_seed(0)
    config = arch(tiny_model("mhmoe_per_head"), tiny_moe(heads=3, num_experts=4, top_k=2, dispatch="loop"))
    layer = PerHeadMoELayer(config)
    assert len(layer.router) == 3 and layer.experts.num_experts == 3 * 4
    x = torch.randn(2, 5, 48)
    y, stats = layer(x)

    sub_NHd = layer.head(x.reshape(10, 48)).reshape(10, 3, 16)
    expected = torch.zeros(10, 3, 16)
    w = layer.experts
    for j, router in enumerate(layer.router):
        probs = router.gate(sub_NHd[:, j]).float().softmax(-1)
        gates, experts = probs.topk(2, dim=-1)
        gates = gates / gates.sum(-1, keepdim=True)
        for n in range(10):
            for g, e in zip(gates[n], experts[n] + 4 * j):  # pool j: experts 4 j .. 4 j + 3
                s = sub_NHd[n, j]
                expected[n, j] += g * ((F.silu(s @ w.w1[e]) * (s @ w.w3[e])) @ w.w2[e])
    torch.testing.assert_close(y, layer.merge(expected.reshape(10, 48)).view(2, 5, 48), atol=1e-5, rtol=1e-5)
    assert stats.tokens_per_expert.shape == (12,)
    for j in range(3):  # each pool got exactly its head's 10 sub-tokens x k = 2 assignments
        assert stats.tokens_per_expert[4 * j:4 * (j + 1)].sum().item() == 20
    assert stats.divergence.item() == 3.0  # disjoint pools: every head's first choice differs
    assert stats.aux_loss.item() >= 1.0 - 1e-6


def test_budget_counts_a_router_and_a_pool_per_head() -> None:
    config = arch(tiny_model("mhmoe_per_head"), tiny_moe(heads=2, num_experts=4, expert_d_ff=8))
    shared = arch(tiny_model("mhmoe"), tiny_moe(heads=2, num_experts=4, expert_d_ff=8))
    moe_layer = config.model.num_moe_layers
    extra = moe_layer * (4 * 3 * 24 * 8 + 24 * 4)  # a second pool of 4 experts and a second router
    assert count_params(config).total == count_params(shared).total + extra


@pytest.mark.parametrize("mode", ["capacity", "dropless"])
def test_capacity_applies_per_pool(mode: str) -> None:
    torch.manual_seed(0)
    config = arch(tiny_model("mhmoe_per_head"), tiny_moe(heads=2, num_experts=2, top_k=1, capacity_mode=mode,
                                                         capacity_factor=0.5))
    layer = PerHeadMoELayer(config).train()
    _, stats = layer(torch.randn(1, 8, 48))
    # 8 sub-tokens per pool, capacity 1 * ceil(8 / 2) * 0.5 = 2 per expert: at most 4 of 8 kept per pool.
    assert (stats.dropped_frac.item() >= 0.5) == (mode == "capacity")
