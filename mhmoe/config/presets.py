"""Named run presets: nested override dicts merged under a config file and CLI overrides.

``paper-v2`` is the v2 paper's SMoE baseline (docs/MODEL.md); ``cpu-small`` is the same recipe
shrunk so a run trains in minutes on 2 CPU cores; ``debug`` trains in seconds (tests).
Every preset describes the SMoE baseline; other variants are derived from it by the budget
solver (:mod:`mhmoe.sizing.budget`), never copy-pasted.
"""

from __future__ import annotations

import copy
from typing import Any

from mhmoe.config.base import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    "paper-v2": {
        "model": {"ffn": "smoe", "vocab_size": 32000, "d_model": 768, "n_layers": 12, "n_heads": 12,
                  "d_ff": 2048, "moe_every": 2, "max_seq_len": 2048},
        "moe": {"num_experts": 8, "top_k": 1, "expert_d_ff": 2048},
        "data": {"vocab_size": 32000},
        # 256 x 2048 = 0.5M tokens per step, 100k steps (v2 section 3), accumulated over 16 micro-batches
        # of 16 sequences: by mhmoe.sizing.memory's estimate (bf16-mixed, one 80 GB GPU) every Table 1 variant
        # of experiments/paper_v2.yaml then needs at most ~36 GiB without activation checkpointing; 32
        # would fit MH-MoE h=3 by under 1%, too tight for an estimate not yet checked on a GPU.
        "train": {"seq_len": 2048, "batch_size": 256, "max_steps": 100_000, "val_every": 5_000,
                  "micro_batch_size": 16},
        "optim": {"lr": 6e-4, "warmup_steps": 375},
    },
    "cpu-small": {
        # d_ff / d = 2.67 as in the paper; ~1k tokens per step so a run takes minutes on 2 cores.
        "model": {"ffn": "smoe", "vocab_size": 2048, "d_model": 192, "n_layers": 4, "n_heads": 6,
                  "d_ff": 512, "moe_every": 2, "max_seq_len": 256},
        "moe": {"num_experts": 8, "top_k": 1, "expert_d_ff": 512},
        "data": {"vocab_size": 2048, "val_max_windows": 32},
        "train": {"seq_len": 128, "batch_size": 8, "max_steps": 300, "val_every": 100},
        "optim": {"lr": 2e-3, "warmup_steps": 30},
    },
    "debug": {
        "model": {"ffn": "smoe", "vocab_size": 512, "d_model": 48, "n_layers": 2, "n_heads": 4,
                  "d_ff": 128, "moe_every": 2, "max_seq_len": 64},
        "moe": {"num_experts": 8, "top_k": 1, "expert_d_ff": 128},
        "data": {"vocab_size": 512},
        "train": {"seq_len": 64, "batch_size": 8, "max_steps": 40, "val_every": 20},
        "optim": {"lr": 3e-3, "warmup_steps": 5},
    },
}


def preset(name: str) -> dict[str, Any]:
    """A deep copy of a preset's nested overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
