"""Which accelerator and numeric precision a run trains with, resolved from its config."""

from __future__ import annotations

from typing import cast

from mhmoe.run_config import Precision, RunConfig


def resolve_precision(config: RunConfig, accelerator: str) -> Precision:
    """fp32 on CPU (bf16 is ~100x slower without AMX), bf16-mixed on GPU unless set."""
    if config.train.precision != "auto":
        return cast(Precision, config.train.precision)
    return "bf16-mixed" if accelerator == "gpu" else "32-true"


def resolve_accelerator(config: RunConfig) -> str:
    # torch here, not at the top: the torch-free preflight (mhmoe.memory) imports this module.
    import torch

    acc = config.train.accelerator
    if acc == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if acc == "cuda" else acc
