"""The checkpoint files of one training run's folder, and which one a resume should load.

``last.ckpt`` is the newest; overwriting it keeps the one before as ``previous.ckpt`` (see
:mod:`mhmoe.training.checkpoint_io`), so one bad file never costs more than one checkpoint
interval; ``final.ckpt`` is written once training ends. Free of Lightning, so sweep tooling can
inspect a folder cheaply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mhmoe.training.checkpoint import CheckpointError, read_checkpoint

LAST = "last.ckpt"
PREVIOUS = "previous.ckpt"
FINAL = "final.ckpt"
RESUME_ORDER = (LAST, PREVIOUS)
"""Files a resume tries, newest first."""


@dataclass(frozen=True)
class ResumePick:
    """The checkpoint a resume should load (None: start at step 0) and why others were skipped."""

    path: Path | None
    problems: tuple[str, ...] = ()
    """One line per checkpoint file that exists but cannot be used."""


def pick_resume_checkpoint(checkpoint_dir: Path) -> ResumePick:
    """The newest readable, digest-verified checkpoint in ``checkpoint_dir`` (last, then previous)."""
    problems = []
    for name in RESUME_ORDER:
        path = Path(checkpoint_dir) / name
        if not path.is_file():
            continue
        try:
            read_checkpoint(path)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        return ResumePick(path=path, problems=tuple(problems))
    return ResumePick(path=None, problems=tuple(problems))


def finished_step(checkpoint_dir: Path) -> int | None:
    """The step ``final.ckpt`` was written at (None: none, or unreadable): where a finished run ended."""
    try:
        return int(read_checkpoint(Path(checkpoint_dir) / FINAL).get("global_step", 0))
    except CheckpointError:
        return None


def set_aside(checkpoint_dir: Path) -> list[Path]:
    """Rename every resumable checkpoint to ``*.unusable`` (kept for inspection, never resumed)."""
    moved = []
    for name in RESUME_ORDER:
        path = Path(checkpoint_dir) / name
        if path.is_file():
            target = path.with_name(path.name + ".unusable")
            os.replace(path, target)
            moved.append(target)
    return moved
