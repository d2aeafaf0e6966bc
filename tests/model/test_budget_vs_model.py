"""The analytic budget counts exactly the parameters the built model has."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mhmoe.config.architecture import QuantConfig
from mhmoe.model import build_model
from mhmoe.model.quantization import BitEmbedding, BitGroupedExperts, BitLinear
from mhmoe.sizing.budget import count_mults, count_params
from tests.model.fixtures import arch, registry_architectures, tiny_model, tiny_moe

SUBLN_ALL = QuantConfig(weight_bits=1.58, subln=True, quantize_router=True, quantize_head_merge=True,
                        quantize_embeddings=True)
CASES = {
    "dense": (tiny_model("dense"), tiny_moe(heads=1), None),
    "smoe_untied": (tiny_model("smoe", tie_embeddings=False), tiny_moe(heads=1), None),
    "mhmoe_h3_shared": (tiny_model("mhmoe", n_layers=4), tiny_moe(heads=3, shared_expert_d_ff=40), None),
    "mhmoe_nohead": (tiny_model("mhmoe"), tiny_moe(head_proj=False), None),
    "smoe_with_projections": (tiny_model("smoe"), tiny_moe(heads=1, head_proj=True, merge_proj=True), None),
    "bitnet_subln_all": (tiny_model("mhmoe"), tiny_moe(shared_expert_d_ff=16), SUBLN_ALL),
    "bitnet_default": (tiny_model("fine_grained"), tiny_moe(heads=1, num_experts=12, expert_d_ff=16),
                       QuantConfig(weight_bits=1.58)),
}
ARCHITECTURES = {
    **{name: arch(model, moe, quant) for name, (model, moe, quant) in CASES.items()},
    # Every registered variant row and router, full precision and with every BitNet option on.
    **registry_architectures(),
    **{f"{name}-bitnet": dataclasses.replace(a, quant=SUBLN_ALL) for name, a in registry_architectures().items()},
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_total_and_quantized_params_match_the_built_model(name: str) -> None:
    config = ARCHITECTURES[name]
    net = build_model(config)
    counted = count_params(config)
    assert counted.total == sum(p.numel() for p in net.parameters())
    if config.quant.enabled:
        quantized = sum(
            m.weight.numel() if not isinstance(m, BitGroupedExperts) else m.w1.numel() + m.w3.numel() + m.w2.numel()
            for m in net.modules() if isinstance(m, (BitLinear, BitEmbedding, BitGroupedExperts))
        )
        assert counted.quantized == quantized


FLOP_CASES = {
    "mhmoe_h2_k2": arch(tiny_model("mhmoe"), tiny_moe(heads=2, top_k=2, dispatch="loop")),
    # The loop dispatch uses plain matmuls, which the counter sees (it has no grouped_mm formula).
    **{name: dataclasses.replace(a, moe=dataclasses.replace(a.moe, dispatch="loop"))
       for name, a in registry_architectures().items()},
}


@pytest.mark.parametrize("name", list(FLOP_CASES))
def test_forward_mults_match_torch_flop_counter_without_attention_scores(name: str) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    config = FLOP_CASES[name]
    net = build_model(config)
    B, T = 2, 16
    with FlopCounterMode(display=False) as counter:
        net(torch.randint(0, config.model.vocab_size, (B, T)))
    mults = count_mults(config, seq_len=T)
    # torch counts 2 FLOPs per multiply-add and (on CPU) nothing for the attention-score kernel.
    assert counter.get_total_flops() == 2 * B * T * (mults.total - mults.attention_scores)
