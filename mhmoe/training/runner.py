"""``train()``: one run from a RunConfig to a finished MLflow run and a final checkpoint.

Used by ``mhmoe train`` and by every sweep worker. Resuming continues the same MLflow run from
the newest usable checkpoint in ``checkpoint_dir`` (``last.ckpt``, else ``previous.ckpt``) with
optimizer, schedule and data position restored, so a resumed run reproduces the loss curve of an
uninterrupted one on CPU.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mhmoe.store.atomic import remove_stale_temp_files
from mhmoe.store.home import default_tracking_uri, home_path, home_subdir
from mhmoe.tracking.client import mlflow_client
from mhmoe.tracking.names import TAG_CHECKPOINT
from mhmoe.training import ranks
from mhmoe.training.build import build_training
from mhmoe.training.checkpoint import CheckpointError
from mhmoe.training.checkpoint_files import ResumePick, pick_resume_checkpoint
from mhmoe.training.fit import fit
from mhmoe.training.hardware import check_cluster_launch
from mhmoe.training.mlflow_run import open_run
from mhmoe.training.request import TrainRequest
from mhmoe.training.result import TrainResult

RUNS_DIR = ("checkpoints", "runs")
"""Under the home: the checkpoint folders of ``mhmoe train`` runs, one per run id."""


def new_run_dir() -> Path:
    return home_subdir(*RUNS_DIR)


def train(request: TrainRequest) -> TrainResult:
    """Train ``request.config`` (see :class:`~mhmoe.training.request.TrainRequest` for the rest).

    Resume loads ``last.ckpt``, or ``previous.ckpt`` when the last one is unreadable or fails its
    digest; with neither usable it raises :class:`~mhmoe.training.checkpoint.CheckpointError` before
    anything is created (a sweep worker, which must not lose the point, sets them aside and
    restarts instead).

    Three steps: :func:`~mhmoe.training.build.build_training` (data, model, LitLM and its logging
    callbacks), :func:`~mhmoe.training.mlflow_run.open_run` (the MLflow run, new or resumed) and
    :func:`~mhmoe.training.fit.fit` (the Trainer and the result).
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cfg = request.config
    check_cluster_launch(cfg)  # before any process or run: without a launcher it would hang, not fail
    tracking_uri = request.tracking_uri or default_tracking_uri()
    if cfg.train.world_size > 1 and not ranks.launched_as_rank():
        # an unusable checkpoint fails here, once
        resume_checkpoint(request.checkpoint_dir, request.resume, request.resume_pick)
        return ranks.train_in_rank_processes(cfg, fence=request.fence, rank_zero_hooks=request.rank_zero_hooks,
                                             **{**request.rank_fields(), "tracking_uri": tracking_uri})
    rank = ranks.global_rank()
    run_id, checkpoint_dir = request.run_id, request.checkpoint_dir
    if rank > 0:
        run_id, checkpoint_dir = ranks.inherited_run(run_id, checkpoint_dir)
    elif checkpoint_dir is not None:
        clear_interrupted_writes(checkpoint_dir)
    ckpt_path = resume_checkpoint(checkpoint_dir, request.resume, request.resume_pick)

    setup = build_training(cfg)
    logger = open_run(setup, tracking_uri=tracking_uri, experiment_name=request.experiment_name,
                      run_name=request.run_name, tags=dict(request.tags), parent_run_id=request.parent_run_id,
                      run_id=run_id, resume=request.resume, log_inputs=not ckpt_path, rank=rank, fence=request.fence)
    checkpoint_dir = checkpoint_dir or new_run_dir() / logger.run_id
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    ranks.share_with_ranks(logger.run_id, checkpoint_dir)
    return fit(setup, logger, tracking_uri=tracking_uri, checkpoint_dir=checkpoint_dir, ckpt_path=ckpt_path,
               stop_after=request.stop_after, fence=request.fence, callbacks=list(request.callbacks),
               progress=request.progress, rank=rank)


def resume_checkpoint(checkpoint_dir: Path | None, resume: bool, pick: ResumePick | None = None) -> str | None:
    """The checkpoint a resume loads (None: start at step 0); raises when checkpoints exist but none is usable."""
    if not resume or checkpoint_dir is None:
        return None
    pick = pick or pick_resume_checkpoint(Path(checkpoint_dir))
    if pick.path is None and pick.problems:
        raise CheckpointError(f"no usable checkpoint in {checkpoint_dir}: " + "; ".join(pick.problems))
    if pick.problems and pick.path is not None:
        print(f"warning: resuming from {pick.path.name}: " + "; ".join(pick.problems), file=sys.stderr)
    return str(pick.path) if pick.path else None


def clear_interrupted_writes(checkpoint_dir: Path) -> None:
    """Remove the temp files a killed checkpoint write left; the run starting now owns its folder
    (a sweep attempt under its claim), so no other write can be in progress there."""
    removed = remove_stale_temp_files(checkpoint_dir)
    if removed:
        print(f"removed {len(removed)} temp file(s) left in {checkpoint_dir} by an interrupted write: "
              + ", ".join(sorted(p.name for p in removed)), file=sys.stderr)


def find_checkpoint_dir(run_id: str, tracking_uri: str | None = None) -> Path:
    """Checkpoint folder of an earlier run: its recorded final checkpoint's folder, else the default (not created).

    A recorded default folder (``<home>/checkpoints/runs/<run id>``, recorded absolute) is taken
    from the current home: a resume in a copied home continues the copy, never the original.
    """
    default = home_path().joinpath(*RUNS_DIR, run_id)
    recorded = mlflow_client(tracking_uri).get_run(run_id).data.tags.get(TAG_CHECKPOINT)
    if not recorded:
        return default
    folder = Path(recorded).parent
    return default if folder.parts[-3:] == default.parts[-3:] else folder
