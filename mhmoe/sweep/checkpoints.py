"""Where a sweep's checkpoints live: one folder per grid point, fixed for the study's lifetime.

``<checkpoint root>/<study>-<uid>/<config hash>``: every attempt of a point resumes the same
folder; the study's random uid keeps a deleted and re-created study of the same name from
resuming the old one's checkpoints.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from mhmoe.store.home import home_subdir
from mhmoe.sweep.queue import SweepQueue

UID_ATTR = "mhmoe.sweep_uid"
"""Study user attr: the random id of the study, set once."""


def study_uid(queue: SweepQueue) -> str:
    """The study's random id (created on first use, under the queue lock)."""
    uid = queue.study.user_attrs.get(UID_ATTR)
    if uid is None:
        with queue.lock():
            uid = queue.study.user_attrs.get(UID_ATTR) or uuid.uuid4().hex[:8]
            queue.study.set_user_attr(UID_ATTR, uid)
    return uid


def checkpoint_root(given: Path | None) -> Path:
    """``--checkpoint-root`` when given, else ``<mhmoe home>/sweeps``."""
    return given if given is not None else home_subdir("sweeps")


def point_checkpoint_dir(queue: SweepQueue, root: Path, config_hash: str) -> Path:
    """Fixed per grid point of this study, so every attempt resumes the same checkpoint."""
    return root / f"{queue.study_name}-{study_uid(queue)}" / config_hash


__all__ = ["checkpoint_root", "point_checkpoint_dir", "study_uid"]
