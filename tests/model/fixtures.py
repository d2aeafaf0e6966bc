"""Tiny configs shared by the model tests (d=48: divisible by 1..4 heads, fp32 grouped_mm ok), and
one tiny Architecture per registered variant row and router, so a new registry entry is tested by
every parametrized model test without editing it."""

from __future__ import annotations

import dataclasses

from mhmoe.config.architecture import Architecture, ModelConfig, MoEConfig, QuantConfig
from mhmoe.config.variants import ROUTERS, variant_rows
from mhmoe.sizing.matching import paper_matches, preset_configs


def tiny_model(ffn: str = "mhmoe", **overrides) -> ModelConfig:
    base = dict(ffn=ffn, vocab_size=61, d_model=48, n_layers=2, n_heads=4, d_ff=64, max_seq_len=32)
    base.update(overrides)
    return ModelConfig(**base)


def tiny_moe(**overrides) -> MoEConfig:
    base = dict(num_experts=6, top_k=2, expert_d_ff=32, heads=3)
    base.update(overrides)
    return MoEConfig(**base)


def arch(model: ModelConfig, moe: MoEConfig | None = None, quant: QuantConfig | None = None) -> Architecture:
    """The validated Architecture of these configs (MoE and quantization default to their defaults)."""
    return Architecture(model=model, moe=moe or MoEConfig(), quant=quant or QuantConfig())


def registry_architectures(preset_name: str = "debug") -> dict[str, Architecture]:
    """``<row label>-<router>`` -> Architecture for every row of :func:`mhmoe.config.variants.variant_rows` and
    every router: the row as the matcher sizes it against the preset's SMoE baseline (a variant without
    a matching rule keeps the preset's sizes)."""
    model, baseline = preset_configs(preset_name)
    matches = paper_matches(preset_name)
    cases = {}
    for label, (entry, _) in variant_rows().items():
        row_model, row_moe = (matches[label].apply(model, baseline) if label in matches
                              else (dataclasses.replace(model, ffn=entry.key), baseline))
        for router in ROUTERS:
            cases[f"{label}-{router}"] = Architecture(model=row_model, moe=dataclasses.replace(row_moe, router=router))
    return cases
