"""The fast MoE path against a deliberately naive loop over sub-tokens and their experts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mhmoe.model.moe import MoELayer
from tests.model_fixtures import tiny_moe


def naive_moe(layer: MoELayer, x_BTD: torch.Tensor) -> torch.Tensor:
    """Loop over every sub-token and each of its k experts; capacity by explicit counters."""
    cfg = layer.cfg
    B, T, D = x_BTD.shape
    h, K, E = cfg.heads, cfg.top_k, cfg.num_experts
    tokens = x_BTD.reshape(B * T, D)
    projected = layer.head(tokens)
    subs = projected.reshape(B * T * h, D // h)
    S = subs.shape[0]
    probs = (subs.float() @ layer.router.gate.weight.float().t()).softmax(-1)
    gates, experts = probs.topk(K, dim=-1)
    if cfg.normalize_gates and K > 1:
        gates = gates / gates.sum(-1, keepdim=True)
    keep = [[True] * K for _ in range(S)]
    if cfg.capacity_mode == "capacity" and (layer.training or cfg.drop_at_eval):
        capacity = max(1, int(K * math.ceil(S / E) * cfg.capacity_factor))
        filled = [0] * E
        for k in range(K):  # k-th choices queue behind every (k-1)-th choice
            for s in range(S):
                e = int(experts[s, k])
                keep[s][k] = filled[e] < capacity
                filled[e] += 1
    rows = []
    for s in range(S):
        out = torch.zeros(D // h)
        for k in range(K):
            if not keep[s][k]:
                continue
            e = int(experts[s, k])
            w1, w3 = layer.experts.w1[e], layer.experts.w3[e]
            hidden = F.silu(subs[s] @ w1) * (subs[s] @ w3)
            out = out + gates[s, k] * (hidden @ layer.experts.w2[e])
        rows.append(out)
    y = layer.merge(torch.stack(rows).reshape(B * T, D))
    if layer.shared is not None:
        y = y + layer.shared(tokens)
    return y.view(B, T, D)


CASES = {
    "smoe_top1": dict(heads=1, top_k=1, num_experts=4),
    "mhmoe_h3_top2": dict(heads=3, top_k=2),
    "mhmoe_h2_top2_shared": dict(heads=2, top_k=2, shared_expert_d_ff=24),
    "capacity_h3_top2": dict(heads=3, top_k=2, capacity_mode="capacity"),
    "capacity_h2_top2_factor_half": dict(heads=2, top_k=2, capacity_mode="capacity", capacity_factor=0.5),
    "loop_dispatch_capacity": dict(heads=3, top_k=3, capacity_mode="capacity", dispatch="loop"),
    "unnormalized_gates": dict(heads=2, top_k=2, normalize_gates=False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fast_path_matches_naive_reference(name: str) -> None:
    torch.manual_seed(1)
    layer = MoELayer(48, tiny_moe(**CASES[name]), "mhmoe")
    x = torch.randn(2, 7, 48)
    x_fast = x.clone().requires_grad_(True)
    x_ref = x.clone().requires_grad_(True)
    y_fast, stats = layer(x_fast)
    grad_out = torch.randn_like(y_fast)
    (y_fast * grad_out).sum().backward()
    fast_grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    y_ref = naive_moe(layer, x_ref)
    (y_ref * grad_out).sum().backward()
    torch.testing.assert_close(y_fast, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x_fast.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    for n, p in layer.named_parameters():
        torch.testing.assert_close(fast_grads[n], p.grad, atol=1e-5, rtol=1e-5, msg=f"grad of {n}")
    if "capacity" in name:
        assert stats.dropped_frac.item() > 0  # the case really exercises dropping


def test_capacity_not_applied_at_eval_unless_configured() -> None:
    torch.manual_seed(0)
    for drop_at_eval, expect_drop in ((False, False), (True, True)):
        moe = tiny_moe(capacity_mode="capacity", capacity_factor=0.5, drop_at_eval=drop_at_eval)
        layer = MoELayer(48, moe, "mhmoe")
        layer.eval()
        with torch.no_grad():
            _, stats = layer(torch.randn(2, 8, 48))
        assert (stats.dropped_frac.item() > 0) == expect_drop


def test_single_head_mhmoe_without_projections_equals_smoe() -> None:
    torch.manual_seed(0)
    smoe = MoELayer(48, tiny_moe(heads=1, top_k=2), "smoe")
    mh1 = MoELayer(48, tiny_moe(heads=1, top_k=2, head_proj=False, merge_proj=False), "mhmoe")
    mh1.load_state_dict(smoe.state_dict())
    x = torch.randn(3, 5, 48)
    torch.testing.assert_close(mh1(x)[0], smoe(x)[0], atol=0, rtol=0)


def test_grouped_mm_and_loop_dispatch_agree() -> None:
    torch.manual_seed(0)
    a = MoELayer(48, tiny_moe(dispatch="grouped_mm"), "mhmoe")
    b = MoELayer(48, tiny_moe(dispatch="loop"), "mhmoe")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 9, 48)
    torch.testing.assert_close(a(x)[0], b(x)[0], atol=1e-5, rtol=1e-5)


def test_auto_dispatch_falls_back_to_the_loop_in_float64() -> None:
    torch.manual_seed(0)
    auto = MoELayer(48, tiny_moe(dispatch="auto"), "mhmoe").double()
    loop = MoELayer(48, tiny_moe(dispatch="loop"), "mhmoe").double()
    loop.load_state_dict(auto.state_dict())
    x = torch.randn(2, 9, 48, dtype=torch.float64)
    torch.testing.assert_close(auto(x)[0], loop(x)[0], atol=0, rtol=0)  # the same code path
    forced = MoELayer(48, tiny_moe(dispatch="grouped_mm"), "mhmoe").double()
    with pytest.raises(ValueError, match="moe.dispatch='grouped_mm' takes .* not torch.float64"):
        forced(x)


def test_aux_loss_is_one_for_uniform_routing() -> None:
    from mhmoe.model.routing import load_balancing_loss

    E, S = 4, 8
    probs = torch.full((S, E), 1 / E)
    experts = torch.arange(S).remainder(E).unsqueeze(1)
    assert load_balancing_loss(probs, experts).item() == pytest.approx(1.0)


def test_routing_stats_on_known_assignment() -> None:
    from mhmoe.model.routing import routing_stats

    logits = torch.zeros(6, 3)
    probs = logits.softmax(-1)
    experts = torch.tensor([[0], [0], [1], [0], [0], [0]])  # tokens of 2 sub-tokens each: (0,0), (1,0), (0,0)
    stats = routing_stats(logits, probs, torch.logsumexp(logits, -1), experts, None, heads=2, activation_threshold=0.6,
                          aux_loss=torch.tensor(1.0), z_loss=torch.tensor(0.0))
    assert stats.tokens_per_expert.tolist() == [5, 1, 0]
    assert stats.load_imbalance.item() == pytest.approx(5 / 2)
    assert stats.activation_ratio.item() == pytest.approx(1 / 3)  # only expert 0 reaches 0.6 x 2
    assert stats.entropy.item() == pytest.approx(math.log(3))
    assert stats.divergence.item() == pytest.approx(4 / 3)
    assert stats.divergence_hist.tolist() == [2, 1]
