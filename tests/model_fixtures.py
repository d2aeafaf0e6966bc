"""Tiny configs shared by the model tests (d=48: divisible by 1..4 heads, fp32 grouped_mm ok)."""

from __future__ import annotations

from mhmoe.config import ModelConfig, MoEConfig


def tiny_model(ffn: str = "mhmoe", **overrides) -> ModelConfig:
    base = dict(ffn=ffn, vocab_size=61, d_model=48, n_layers=2, n_heads=4, d_ff=64, max_seq_len=32)
    base.update(overrides)
    return ModelConfig(**base)


def tiny_moe(**overrides) -> MoEConfig:
    base = dict(num_experts=6, top_k=2, expert_d_ff=32, heads=3)
    base.update(overrides)
    return MoEConfig(**base)
