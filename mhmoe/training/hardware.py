"""Which accelerator and numeric precision a run trains with, resolved from its config."""

from __future__ import annotations

from typing import cast

from mhmoe.configbase import ConfigError
from mhmoe.run_config import Precision, RunConfig


def resolve_precision(config: RunConfig, accelerator: str) -> Precision:
    """fp32 on CPU (bf16 is ~100x slower without AMX), bf16-mixed on GPU unless set."""
    if config.train.precision != "auto":
        return cast(Precision, config.train.precision)
    return "bf16-mixed" if accelerator == "gpu" else "32-true"


def resolve_accelerator(config: RunConfig) -> str:
    """``cpu`` or ``gpu``; a GPU asked for on a machine where torch sees none is refused (ConfigError)
    before anything is created, instead of Lightning's traceback once the run has started."""
    # torch here, not at the top: the torch-free preflight (mhmoe.memory) imports this module.
    import torch

    acc = config.train.accelerator
    if acc == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if acc in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.accelerator={acc!r} but torch sees no CUDA GPU on this machine; "
                          "choose train.accelerator from ['auto', 'cpu']")
    return "gpu" if acc == "cuda" else acc
