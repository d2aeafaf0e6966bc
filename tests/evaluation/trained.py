"""A really trained debug checkpoint for the evaluation tests, tracked in MLflow.

Each test module trains its own (module-scoped fixture, ~40 steps) in the session MHMOE_HOME that
tests/conftest.py sets, so the corpus, tokenizer and default SQLite tracking store are real.
"""

from __future__ import annotations

from pathlib import Path

from mhmoe.config.run import resolve_run_config
from mhmoe.training.request import TrainRequest
from mhmoe.training.result import TrainResult
from mhmoe.training.runner import train


def train_debug_checkpoint(checkpoint_dir: Path) -> TrainResult:
    """A 40-step debug SMoE model; its final checkpoint records the MLflow run and tracking URI."""
    cfg = resolve_run_config("debug", None, {"train.max_steps": 40, "train.val_every": 40,
                                             "data.val_max_windows": 4})
    return train(TrainRequest(config=cfg, checkpoint_dir=checkpoint_dir, progress=False))
