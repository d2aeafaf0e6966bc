"""Lightning's checkpoint IO for mhmoe runs: atomic writes, a kept previous copy, verified reads.

- A crash mid-save never leaves a truncated ``last.ckpt``: the new file is written beside it,
  fsynced, and renamed over it; the old one becomes ``previous.ckpt``.
- Every read goes through :func:`mhmoe.training.checkpoint.read_checkpoint`: ``weights_only=True`` and the
  weights digest checked, for resume exactly as for evaluation.
- A ``fence`` (a sweep worker's claim on its trial) is checked before each write, so a worker
  that lost its trial to another never overwrites the new owner's checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mhmoe.store.atomic import atomic_write
from mhmoe.training.checkpoint import read_checkpoint
from mhmoe.training.checkpoint_files import LAST, PREVIOUS


class AtomicCheckpointIO(TorchCheckpointIO):
    """Atomic, rotating writes and verified reads (see the module docstring)."""

    def __init__(self, fence: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.fence = fence
        """Called before every write; raises when this process may no longer write (lost claim)."""
        self._last_saved_step: dict[Path, Any] = {}

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if self.fence is not None:
            self.fence()
        path = Path(path)
        step = checkpoint.get("global_step")
        # A second save at the same step (the pause callback after ModelCheckpoint) replaces last
        # without rotating: previous must stay an older step.
        rotate = path.name == LAST and self._last_saved_step.get(path) != step
        with atomic_write(path, "wb", backup=path.with_name(PREVIOUS) if rotate else None) as handle:
            torch.save(checkpoint, handle)
        self._last_saved_step[path] = step

    def load_checkpoint(self, path: str | Path, map_location: Any = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        # weights_only is always True here, whatever the caller or TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says.
        return read_checkpoint(path)

