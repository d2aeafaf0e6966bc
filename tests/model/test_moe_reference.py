"""The fast MoE path against a deliberately naive loop over sub-tokens and their experts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mhmoe.model.moe import MoELayer
from tests.model.fixtures import arch, tiny_model, tiny_moe


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
    "bmm_dispatch_h3_top3": dict(heads=3, top_k=3, dispatch="bmm"),
    "bmm_dispatch_capacity": dict(heads=3, top_k=2, capacity_mode="capacity", dispatch="bmm"),
    "bmm_dispatch_shared_unnormalized": dict(heads=2, top_k=2, shared_expert_d_ff=24, normalize_gates=False,
                                             dispatch="bmm"),
    "grouped_mm_dispatch_capacity": dict(heads=2, top_k=2, capacity_mode="capacity", dispatch="grouped_mm"),
    "unnormalized_gates": dict(heads=2, top_k=2, normalize_gates=False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fast_path_matches_naive_reference(name: str) -> None:
    torch.manual_seed(1)
    layer = MoELayer(arch(tiny_model("mhmoe"), tiny_moe(**CASES[name])))
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
        layer = MoELayer(arch(tiny_model("mhmoe"), moe))
        layer.eval()
        with torch.no_grad():
            _, stats = layer(torch.randn(2, 8, 48))
        assert (stats.dropped_frac.item() > 0) == expect_drop


def test_single_head_mhmoe_without_projections_equals_smoe() -> None:
    torch.manual_seed(0)
    smoe = MoELayer(arch(tiny_model("smoe"), tiny_moe(heads=1, top_k=2)))
    mh1 = MoELayer(arch(tiny_model("mhmoe"), tiny_moe(heads=1, top_k=2, head_proj=False, merge_proj=False)))
    mh1.load_state_dict(smoe.state_dict())
    x = torch.randn(3, 5, 48)
    torch.testing.assert_close(mh1(x)[0], smoe(x)[0], atol=0, rtol=0)


def test_grouped_mm_and_loop_dispatch_agree() -> None:
    torch.manual_seed(0)
    a = MoELayer(arch(tiny_model("mhmoe"), tiny_moe(dispatch="grouped_mm")))
    b = MoELayer(arch(tiny_model("mhmoe"), tiny_moe(dispatch="loop")))
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 9, 48)
    torch.testing.assert_close(a(x)[0], b(x)[0], atol=1e-5, rtol=1e-5)


def test_every_kernel_agrees_forward_and_backward() -> None:
    torch.manual_seed(0)
    layers = {d: MoELayer(arch(tiny_model("mhmoe"), tiny_moe(dispatch=d, heads=3, top_k=3)))
              for d in ("loop", "grouped_mm", "bmm")}
    for layer in layers.values():
        layer.load_state_dict(layers["loop"].state_dict())
    x = torch.randn(2, 9, 48)
    outputs = {}
    for name, layer in layers.items():
        x_in = x.clone().requires_grad_(True)
        y, _ = layer(x_in)
        y.square().sum().backward()
        outputs[name] = (y, x_in.grad, {n: p.grad for n, p in layer.named_parameters()})
    for name in ("grouped_mm", "bmm"):
        y, gx, grads = outputs[name]
        torch.testing.assert_close(y, outputs["loop"][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gx, outputs["loop"][1], atol=1e-5, rtol=1e-5)
        for n, g in grads.items():
            torch.testing.assert_close(g, outputs["loop"][2][n], atol=1e-5, rtol=1e-5, msg=f"{name}: grad of {n}")


def test_auto_kernel_choice_from_counts() -> None:
    experts = MoELayer(arch(tiny_model("mhmoe"), tiny_moe(num_experts=4))).experts
    balanced, skewed = torch.tensor([10, 10, 11, 9]), torch.tensor([30, 2, 5, 3])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the multi-threaded rule, whatever the test run's setting
    try:
        assert experts.choose_kernel(balanced, torch.float32) == ("bmm", 11)
        assert experts.choose_kernel(skewed, torch.float32) == ("grouped_mm", None)
        torch.set_num_threads(1)  # one thread: pads only when nothing is wasted
        assert experts.choose_kernel(balanced, torch.float32) == ("grouped_mm", None)
        assert experts.choose_kernel(torch.tensor([7, 7, 7, 7]), torch.float32) == ("bmm", 7)
    finally:
        torch.set_num_threads(threads)
    assert experts.choose_kernel(balanced, torch.float64) == ("loop", None)  # grouped_mm dtypes only
    # Off the CPU the counts are never read on the host: grouped_mm, no sync (meta has no values).
    assert experts.choose_kernel(balanced.to("meta"), torch.bfloat16) == ("grouped_mm", None)
    forced = MoELayer(arch(tiny_model("mhmoe"), tiny_moe(num_experts=4, dispatch="bmm"))).experts
    assert forced.choose_kernel(skewed, torch.float64) == ("bmm", 30)


def test_auto_dispatch_falls_back_to_the_loop_in_float64() -> None:
    torch.manual_seed(0)
    auto = MoELayer(arch(tiny_model("mhmoe"), tiny_moe(dispatch="auto"))).double()
    loop = MoELayer(arch(tiny_model("mhmoe"), tiny_moe(dispatch="loop"))).double()
    loop.load_state_dict(auto.state_dict())
    x = torch.randn(2, 9, 48, dtype=torch.float64)
    torch.testing.assert_close(auto(x)[0], loop(x)[0], atol=0, rtol=0)  # the same code path
    forced = MoELayer(arch(tiny_model("mhmoe"), tiny_moe(dispatch="grouped_mm"))).double()
    with pytest.raises(ValueError, match="moe.dispatch='grouped_mm' takes .* not torch.float64"):
        forced(x)


def test_slot_moves_are_adjoint_gathers_with_padding_and_dropping() -> None:
    """to_slots / from_slots (padded layout, one dropped assignment) against index arithmetic, and
    their custom backward against torch's numerical gradient."""
    from mhmoe.model.slots import from_slots, slot_layout, sort_by_expert, to_slots

    experts_SK = torch.tensor([[0, 2], [2, 1], [0, 2], [1, 0]])
    keep_SK = torch.tensor([[True, True], [True, False], [True, True], [True, True]])
    routed_E = torch.bincount(experts_SK.reshape(-1), minlength=3)
    sorted_A, sorted_experts, counts_E = sort_by_expert(experts_SK, keep_SK, routed_E)
    assert counts_E.tolist() == [3, 1, 3]  # (1, k=1) to expert 1 was dropped
    layout = slot_layout(sorted_A, sorted_experts, counts_E, (4, 2), rows_per_expert=3)
    assert layout.padded and layout.dropped and layout.counts_E.tolist() == [3, 3, 3]
    # 3 rows per expert, token order within; expert 1 holds only sub-token 3, then 2 padding rows (S = 4)
    assert layout.token_R1.view(-1).tolist() == [0, 2, 3, 3, 4, 4, 0, 1, 2]
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    rows = to_slots(x, layout)
    assert torch.equal(rows[4:6], torch.zeros(2, 5, dtype=torch.float64))  # padding rows read zeros
    y = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    back = from_slots(y, layout)
    expected = torch.stack([y[0] + y[6], y[7], y[1] + y[8], y[3] + y[2]])  # sub-token 1 keeps only k=0
    torch.testing.assert_close(back, expected, atol=0, rtol=0)
    assert torch.autograd.gradcheck(lambda t: to_slots(t, layout), (x,))
    assert torch.autograd.gradcheck(lambda t: from_slots(t, layout), (y,))


def test_silu_gate_matches_autograd_and_refuses_a_second_backward() -> None:
    from mhmoe.model.layers import silu_gate

    gate, up = torch.randn(7, 5, requires_grad=True), torch.randn(7, 5, requires_grad=True)
    grad = torch.randn(7, 5)
    (silu_gate(gate * 1, up * 1) * grad).sum().backward()
    fused = gate.grad.clone(), up.grad.clone()
    gate.grad = up.grad = None
    (F.silu(gate) * up * grad).sum().backward()
    torch.testing.assert_close(fused, (gate.grad, up.grad))
    out = silu_gate(gate * 1, up * 1).sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


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
