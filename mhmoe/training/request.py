"""What one ``train()`` call is asked to do: a frozen :class:`TrainRequest`, checked when it is made."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhmoe.config.run import RunConfig
from mhmoe.training.checkpoint_files import ResumePick
from mhmoe.training.failures import Fence
from mhmoe.training.ranks import RankZeroHooks

RANK_FIELDS = ("tracking_uri", "experiment_name", "run_name", "tags", "parent_run_id", "run_id", "checkpoint_dir",
               "resume", "progress", "stop_after")
"""The plain fields that cross into rank processes (as JSON); the objects stay with the caller."""


@dataclass(frozen=True, kw_only=True)
class TrainRequest:
    """One run of ``config``: where it is tracked and checkpointed, whether it resumes, when it pauses.

    ``resume`` continues MLflow run ``run_id`` from the newest usable checkpoint in ``checkpoint_dir``
    (``resume_pick``: that choice when the caller already made it). ``stop_after`` pauses the run at
    that global step with a resumable ``last.ckpt`` (for preemptible jobs with a time limit); the
    schedule still targets ``train.max_steps``. ``fence`` (a sweep worker's claim) is checked before
    every checkpoint write and polled every step; once lost, training stops and writes nothing more.
    ``callbacks`` are extra Lightning callbacks (a sweep worker's per-validation report). With
    ``train.devices > 1`` training runs in rank processes, which cannot receive objects: ``fence``
    stays in the caller's process and stops them once lost, and rank 0 builds its own fence and
    callbacks from ``rank_zero_hooks`` (``callbacks`` are not used there).
    """

    config: RunConfig
    tracking_uri: str | None = None
    """None: the home's default store."""
    experiment_name: str = "mhmoe"
    run_name: str | None = None
    """None: the config's variant."""
    tags: Mapping[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None
    run_id: str | None = None
    """The MLflow run a resume continues (None: a new run)."""
    checkpoint_dir: Path | None = None
    """None: a new folder under the home, named by the run id."""
    resume: bool = False
    progress: bool = True
    stop_after: int | None = None
    fence: Fence | None = None
    resume_pick: ResumePick | None = None
    callbacks: Sequence[Any] = ()
    """Kept as a tuple."""
    rank_zero_hooks: RankZeroHooks | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.config, RunConfig):
            raise TypeError(f"TrainRequest.config must be a RunConfig, not {type(self.config).__name__}")
        if not self.experiment_name:
            raise ValueError("TrainRequest.experiment_name must not be empty")
        if self.stop_after is not None and (isinstance(self.stop_after, bool) or not isinstance(self.stop_after, int)
                                            or self.stop_after < 1):
            raise ValueError(f"TrainRequest.stop_after must be a step >= 1 or None, not {self.stop_after!r}")
        if self.resume and not self.run_id:
            raise ValueError("TrainRequest.resume needs the run_id of the MLflow run it continues")
        if self.resume_pick is not None and not self.resume:
            raise ValueError("TrainRequest.resume_pick is the checkpoint a resume loads: set resume=True")
        # The caller's containers copied (a later change to them is not this request's), and a Path
        # from the JSON string rank processes read.
        object.__setattr__(self, "tags", dict(self.tags or {}))
        object.__setattr__(self, "callbacks", tuple(self.callbacks or ()))
        if self.checkpoint_dir is not None:
            object.__setattr__(self, "checkpoint_dir", Path(self.checkpoint_dir))

    def rank_fields(self) -> dict[str, Any]:
        """The fields rank processes rebuild the request from, as JSON values."""
        values = {name: getattr(self, name) for name in RANK_FIELDS}
        values["checkpoint_dir"] = str(self.checkpoint_dir) if self.checkpoint_dir is not None else None
        return values
