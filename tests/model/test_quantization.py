"""BitNet converter: allowed levels, straight-through gradients, placement switches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mhmoe.config.architecture import QuantConfig
from mhmoe.model import build_model
from mhmoe.model.experts import GroupedExperts
from mhmoe.model.layers import TokenEmbedding
from mhmoe.model.quantization import (
    BitEmbedding,
    BitGroupedExperts,
    BitLinear,
    quantize_activation,
    quantize_weight,
    weight_levels,
)
from tests.model.fixtures import arch, tiny_model, tiny_moe


@pytest.mark.parametrize("bits, max_levels", [(1.58, 3), (2.0, 4), (4.0, 15), (8.0, 255)])
def test_quantized_weights_take_only_allowed_levels(bits: float, max_levels: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 96)
    q = quantize_weight(w, bits)
    low, high = weight_levels(bits)
    # Recover the integer grid: every value is an integer multiple of one scale.
    scale = (1.0 / w.abs().mean()) if bits <= 2 else high / w.abs().max()
    ints = q * scale
    torch.testing.assert_close(ints, ints.round(), atol=1e-4, rtol=0)
    levels = ints.round().unique()
    assert levels.min() >= low and levels.max() <= high
    assert len(levels) <= max_levels
    if bits == 1.58:
        assert sorted(levels.tolist()) == [-1.0, 0.0, 1.0]


def test_expert_weights_get_one_scale_per_expert() -> None:
    w = torch.stack([torch.randn(8, 12), 100 * torch.randn(8, 12)])
    q = quantize_weight(w, 1.58, dims=(1, 2))
    for e in range(2):  # STE arithmetic leaves float noise: compare on a coarse grid
        assert (q[e] / q[e].abs().max()).mul(1e4).round().unique().numel() <= 3
    assert q[1].abs().max() > 10 * q[0].abs().max()


def test_activation_quantization_is_per_token_8bit() -> None:
    x = torch.tensor([[0.5, -1.0, 0.25], [100.0, 3.0, -50.0]])
    q = quantize_activation(x, 8)
    for row, qrow in zip(x, q):
        ints = qrow * 127 / row.abs().max()
        torch.testing.assert_close(ints, ints.round(), atol=1e-4, rtol=0)
    assert q[0, 1].item() == pytest.approx(-1.0)


def test_straight_through_estimator_passes_gradients() -> None:
    w = torch.randn(5, 7, requires_grad=True)
    quantize_weight(w, 1.58).mul(torch.arange(35.0).view(5, 7)).sum().backward()
    torch.testing.assert_close(w.grad, torch.arange(35.0).view(5, 7))
    x = torch.randn(3, 4, requires_grad=True)
    quantize_activation(x, 8).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(3, 4))


def _classes(net: nn.Module) -> dict[str, type]:
    return {name: type(m) for name, m in net.named_modules()}


def test_default_placement_matches_official_code() -> None:
    net = build_model(arch(tiny_model("mhmoe"), tiny_moe(shared_expert_d_ff=32), QuantConfig(weight_bits=1.58)))
    moe = net.moe_layers()[1]
    assert isinstance(net.blocks[0].attn.wq, BitLinear) and isinstance(net.blocks[0].attn.wo, BitLinear)
    assert isinstance(net.blocks[0].ffn.w1, BitLinear) and isinstance(net.blocks[0].ffn.w2, BitLinear)
    assert isinstance(moe.experts, BitGroupedExperts)
    assert isinstance(moe.shared.w3, BitLinear)
    # Kept in full precision: router, head, merge, embeddings.
    assert type(moe.router.gate) is nn.Linear
    assert type(moe.head) is nn.Linear and type(moe.merge) is nn.Linear
    assert type(net.tok_emb) is TokenEmbedding


def test_switches_quantize_the_rest_and_add_subln() -> None:
    quant = QuantConfig(weight_bits=1.58, quantize_router=True, quantize_head_merge=True,
                        quantize_embeddings=True, subln=True)
    net = build_model(arch(tiny_model("mhmoe"), tiny_moe(), quant))
    moe = net.moe_layers()[1]
    assert isinstance(moe.router.gate, BitLinear)
    assert isinstance(moe.head, BitLinear) and isinstance(moe.merge, BitLinear)
    assert isinstance(net.tok_emb, BitEmbedding)
    assert not isinstance(net.blocks[0].attn.wo.sub_norm, nn.Identity)  # SubLN before out-proj
    assert isinstance(net.blocks[0].attn.wq.sub_norm, nn.Identity)  # not before q/k/v
    assert moe.experts.sub_norm.weight.shape == (6, 32)  # per-expert SubLN before the down proj


def test_a_quantized_router_routes_with_quantized_logits() -> None:
    """quant.quantize_router swaps the gate for a BitLinear, and the logits the router routes with
    are that BitLinear's (8-bit inputs, ternary weights), not the full-precision weight's."""
    quant = QuantConfig(weight_bits=1.58, quantize_router=True)
    router = build_model(arch(tiny_model("smoe"), tiny_moe(heads=1), quant)).moe_layers()[1].router
    x = torch.randn(10, router.gate.in_features)
    expected = quantize_activation(x, 8) @ quantize_weight(router.gate.weight, 1.58).T
    assert torch.allclose(router.logits(x), expected, atol=1e-5)
    assert not torch.allclose(router.logits(x), x @ router.gate.weight.T, atol=1e-3)


def test_attention_off_switch_and_full_precision_leaves_model_untouched() -> None:
    torch.manual_seed(0)
    fp = build_model(arch(tiny_model("smoe"), tiny_moe(heads=1)))
    assert not any(isinstance(m, (BitLinear, BitGroupedExperts, BitEmbedding)) for m in fp.modules())
    net = build_model(arch(tiny_model("smoe"), tiny_moe(heads=1), QuantConfig(weight_bits=4, quantize_attention=False)))
    assert type(net.blocks[0].attn.wq) is nn.Linear
    assert isinstance(net.blocks[0].ffn.w1, BitLinear)
    assert isinstance(net.moe_layers()[1].experts, GroupedExperts)


def test_converter_keeps_parameters_and_state_dict_keys() -> None:
    torch.manual_seed(0)
    fp = build_model(arch(tiny_model("mhmoe"), tiny_moe()))
    torch.manual_seed(0)
    q = build_model(arch(tiny_model("mhmoe"), tiny_moe(), QuantConfig(weight_bits=1.58)))
    assert fp.state_dict().keys() == q.state_dict().keys()
    for (name, a), b in zip(fp.state_dict().items(), q.state_dict().values()):
        assert torch.equal(a, b), name
    idx = torch.randint(0, 61, (2, 8))
    assert not torch.allclose(fp(idx).logits, q(idx).logits)  # quantization really changes outputs


@pytest.mark.parametrize("subln", [False, True])
def test_quantized_experts_agree_across_kernels(subln: bool) -> None:
    """The bmm path (padded rows) calls the quantization hooks as the packed kernels do: per-expert
    weight scales, per-row activations, the per-expert SubLN gain on the right rows."""
    torch.manual_seed(0)
    quant = QuantConfig(weight_bits=1.58, subln=subln)
    nets = {d: build_model(arch(tiny_model("mhmoe"), tiny_moe(heads=3, top_k=3, dispatch=d), quant))
            for d in ("loop", "grouped_mm", "bmm")}
    if subln:
        with torch.no_grad():  # distinct gains per expert, so a row given the wrong expert shows
            nets["loop"].moe_layers()[1].experts.sub_norm.weight.uniform_(0.5, 1.5)
    for net in nets.values():
        net.load_state_dict(nets["loop"].state_dict())
    idx = torch.randint(0, 61, (2, 8))
    grads = {}
    for name, net in nets.items():
        out = net(idx).logits
        out.square().mean().backward()
        grads[name] = (out, {n: p.grad for n, p in net.named_parameters() if p.grad is not None})
    for name in ("grouped_mm", "bmm"):
        torch.testing.assert_close(grads[name][0], grads["loop"][0], atol=1e-5, rtol=1e-5, msg=name)
        for n, g in grads[name][1].items():
            torch.testing.assert_close(g, grads["loop"][1][n], atol=1e-4, rtol=1e-4, msg=f"{name}: grad of {n}")
