"""Atomic checkpoint writes: a crash mid-save never leaves a truncated ``last.ckpt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mhmoe.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temp file in the same directory, fsync, then ``os.replace`` over the target."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        with atomic_write(path, "wb") as handle:
            torch.save(checkpoint, handle)
