"""The model zoo: every variant builds and trains one step; invariants of the backbone."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mhmoe.config.architecture import ModelConfig, MoEConfig, QuantConfig
from mhmoe.config.base import ConfigError
from mhmoe.config.variants import ROUTERS
from mhmoe.model import FFN_REGISTRY, build_model
from tests.model.fixtures import arch, registry_architectures, tiny_model, tiny_moe

CONFIGS = {
    **registry_architectures(),  # every registered variant row and router
    "fine_grained_tiny": arch(tiny_model("fine_grained"), tiny_moe(heads=1, num_experts=12, top_k=2, expert_d_ff=16)),
    "mhmoe_no_head": arch(tiny_model("mhmoe"), tiny_moe(head_proj=False)),
    "mhmoe_no_merge": arch(tiny_model("mhmoe"), tiny_moe(merge_proj=False)),
    "smoe_shared": arch(tiny_model("smoe"), tiny_moe(heads=1, shared_expert_d_ff=64)),
    "mhmoe_shared_capacity": arch(tiny_model("mhmoe"), tiny_moe(shared_expert_d_ff=64, capacity_mode="capacity")),
    "mhmoe_loop_dispatch": arch(tiny_model("mhmoe"), tiny_moe(dispatch="loop")),
}
"""Every registered variant and router (so a new entry is covered without editing this file), plus
configurations the registry rows do not reach."""


def test_every_variant_and_router_has_a_config() -> None:
    assert {a.model.ffn for a in CONFIGS.values()} == set(FFN_REGISTRY)
    assert {a.moe.router for a in CONFIGS.values()} == set(ROUTERS)


@pytest.mark.parametrize("bits", [16.0, 1.58], ids=["fp", "bitnet"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_variant_trains_one_step(name: str, bits: float) -> None:
    torch.manual_seed(0)
    config = dataclasses.replace(CONFIGS[name], quant=QuantConfig(weight_bits=bits))
    model_cfg, moe_cfg = config.model, config.moe
    net = build_model(config)
    idx = torch.randint(0, model_cfg.vocab_size, (2, 12))
    out = net(idx)
    assert out.logits.shape == (2, 12, model_cfg.vocab_size)
    loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), idx.flatten()) + out.aux_loss
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert len(out.routing) == (0 if not config.routes else model_cfg.num_moe_layers)
    for stats in out.routing.values():
        assert stats.tokens_per_expert.sum().item() == 2 * 12 * moe_cfg.heads * moe_cfg.top_k
        assert stats.load_imbalance.item() >= 1.0
        assert 1.0 <= stats.divergence.item() <= moe_cfg.heads


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: ModelConfig(ffn="bogus"), "model.ffn"),
        (lambda: ModelConfig(d_model=50, n_heads=4), "model.n_heads"),
        (lambda: MoEConfig(num_experts=4, top_k=5), "moe.top_k"),
        (lambda: MoEConfig(capacity_mode="sometimes"), "moe.capacity_mode"),
        (lambda: QuantConfig(weight_bits=3), "quant.weight_bits"),
        (lambda: arch(tiny_model("mhmoe"), tiny_moe(heads=5)), "moe.heads=5 does not divide model.d_model=48"),
        (lambda: arch(tiny_model("smoe"), tiny_moe(heads=2)), "moe.heads=2"),
    ],
)
def test_config_errors_name_the_field(make, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        make()


def test_invalid_choice_lists_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        QuantConfig(weight_bits=3)
    assert "1.58" in str(err.value) and "16" in str(err.value)


def test_causality_no_gradient_from_future_positions() -> None:
    torch.manual_seed(0)
    net = build_model(arch(tiny_model("mhmoe"), tiny_moe()))
    emb = net.tok_emb.weight
    idx = torch.randint(0, 61, (1, 10))
    x = torch.nn.functional.embedding(idx, emb).detach().requires_grad_(True)
    # Run the blocks on embeddings we own so the gradient w.r.t. each position is visible.
    h = x
    for block in net.blocks:
        h, _ = block(h, net.rope_cos, net.rope_sin)
    t = 4
    h[0, t].sum().backward()
    grad_per_pos = x.grad[0].abs().sum(-1)
    assert (grad_per_pos[: t + 1] > 0).all()
    assert (grad_per_pos[t + 1 :] == 0).all()


def test_tied_embeddings_share_storage() -> None:
    net = build_model(arch(tiny_model("smoe"), tiny_moe(heads=1)))
    assert net.lm_head is None
    untied = build_model(arch(tiny_model("smoe", tie_embeddings=False), tiny_moe(heads=1)))
    assert untied.lm_head is not None and untied.lm_head.weight.data_ptr() != untied.tok_emb.weight.data_ptr()


def test_moe_placement_follows_moe_every() -> None:
    net = build_model(arch(tiny_model("mhmoe", n_layers=6, moe_every=2), tiny_moe()))
    assert sorted(net.moe_layers()) == [1, 3, 5]


def test_head_and_merge_init_follow_official_code() -> None:
    torch.manual_seed(0)
    big = build_model(arch(tiny_model("mhmoe", d_model=192, n_heads=4), tiny_moe()))
    layer = big.moe_layers()[1]
    bound_head = (2**-0.5) * (6 / (192 + 192)) ** 0.5
    bound_merge = (6 / (192 + 192)) ** 0.5
    assert layer.head.weight.abs().max() <= bound_head + 1e-6
    assert layer.head.weight.abs().max() > 0.9 * bound_head
    assert layer.merge.weight.abs().max() > bound_head  # gain 1 reaches past the head's bound
    assert layer.merge.weight.abs().max() <= bound_merge + 1e-6
    assert torch.count_nonzero(layer.merge.bias) == 0
