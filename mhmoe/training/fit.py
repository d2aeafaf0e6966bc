"""Step 3 of ``train()``: the Lightning Trainer, its callbacks and checkpoint plugin, and the result.

A run that reaches ``train.max_steps`` validates once more if the last step was not a validation
step, writes ``final.ckpt`` (the full, resumable training state), tags and maybe logs it, and closes
the MLflow run; a paused one (``stop_after``) leaves the run open with a resumable ``last.ckpt``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mhmoe.config.run import RunConfig
from mhmoe.tracking.names import CHECKPOINT_ARTIFACT_DIR, TAG_CHECKPOINT, TAG_FAILURE
from mhmoe.training import ranks
from mhmoe.training.build import TrainingSetup
from mhmoe.training.checkpoint_files import FINAL, LAST
from mhmoe.training.failures import Fence, LostClaim, failure_reason
from mhmoe.training.mlflow_run import start_system_metrics
from mhmoe.training.result import TrainResult

AUTO_LOG_CHECKPOINT_BYTES = 256 * 2**20
"""``train.log_checkpoint`` unset: checkpoints up to this size are logged (debug..small presets)."""


def fit(setup: TrainingSetup, logger: Any, *, tracking_uri: str, checkpoint_dir: Path, ckpt_path: str | None,
        stop_after: int | None, fence: Fence | None, callbacks: list | None, progress: bool, rank: int) -> TrainResult:
    """Train ``setup`` from ``ckpt_path`` (None: step 0) into ``checkpoint_dir``, logging to ``logger``.

    Any failure but a lost claim tags the run with its reason and closes it FAILED; a lost claim
    writes nothing (the trial and its run belong to another worker now).
    """
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from mhmoe.training.callbacks import validation_metrics
    from mhmoe.training.checkpoint_io import AtomicCheckpointIO

    cfg, lit, datamodule, run_id = setup.cfg, setup.lit, setup.datamodule, logger.run_id
    last = checkpoint_dir / LAST
    every = cfg.train.checkpoint_every or cfg.train.val_every
    checkpoint_cb = ModelCheckpoint(dirpath=checkpoint_dir, filename="step{step:07d}", save_last=True,
                                    save_top_k=0, every_n_train_steps=every, save_on_train_epoch_end=False)
    # The metric callbacks first: a diverged step stops before any other callback saves its weights.
    callbacks = [*setup.metrics, checkpoint_cb] + ([PauseAt(stop_after, last)] if stop_after else []) \
        + ([FencePoll(fence)] if fence else []) + list(callbacks or [])
    trainer = pl.Trainer(
        accelerator=setup.accelerator, precision=setup.precision, max_steps=cfg.train.max_steps,
        **parallel_trainer_kwargs(cfg), check_val_every_n_epoch=None, num_sanity_val_steps=0,
        gradient_clip_val=cfg.optim.grad_clip or None, logger=logger, callbacks=callbacks,
        plugins=[AtomicCheckpointIO(fence=fence.verify if fence else None), *cluster_plugins(cfg)],
        enable_progress_bar=progress, enable_model_summary=False,
        log_every_n_steps=cfg.train.log_every, default_root_dir=str(checkpoint_dir), deterministic=False,
    )
    monitor = start_system_metrics(run_id, tracking_uri) if rank == 0 and cfg.train.system_metrics else None
    try:
        trainer.fit(lit, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if trainer.global_step < cfg.train.max_steps:  # paused: leave the run open for --resume
            return TrainResult(run_id=run_id, checkpoint_path=last, metrics=validation_metrics(trainer),
                               start_step=lit.start_step, final_step=trainer.global_step)
        if trainer.global_step % cfg.train.val_every != 0:  # always validate at the end
            trainer.validate(lit, datamodule=datamodule, verbose=False)
    except LostClaim:
        raise  # the trial and its run belong to another worker now: write nothing
    except BaseException as err:
        logger.experiment.set_tag(run_id, TAG_FAILURE, failure_reason(err))
        logger.finalize("FAILED")
        raise
    finally:
        if monitor is not None:
            monitor.finish()
    final = checkpoint_dir / FINAL
    trainer.save_checkpoint(final, weights_only=False)  # the full training state, resumable
    logger.experiment.set_tag(run_id, TAG_CHECKPOINT, str(final))
    if rank == 0 and should_log_checkpoint(cfg, final):
        logger.experiment.log_artifact(run_id, str(final), CHECKPOINT_ARTIFACT_DIR)
    logger.finalize("success")
    return TrainResult(run_id=run_id, checkpoint_path=final, metrics=validation_metrics(trainer),
                       start_step=lit.start_step, final_step=trainer.global_step)


def parallel_trainer_kwargs(cfg: RunConfig) -> dict:
    """Trainer arguments for devices, ranks and micro-batches.

    The data module shards every optimizer batch over ranks itself (no DistributedSampler) and
    serves micro-batches, so Lightning's batch counts (validation interval) are in micro-batches.
    """
    train = cfg.train
    strategy: Any = train.strategy
    if strategy == "auto" and train.world_size > 1:
        strategy = "ddp"
    if strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        # Gradients live in DDP's all-reduce buckets instead of being copied into them every step.
        strategy = DDPStrategy(gradient_as_bucket_view=True)
    return {"devices": train.devices, "num_nodes": train.num_nodes, "strategy": strategy,
            "accumulate_grad_batches": train.accumulate_grad_batches, "use_distributed_sampler": False,
            "val_check_interval": train.val_every * train.accumulate_grad_batches}


def cluster_plugins(cfg: RunConfig) -> list:
    """In our own rank processes (not srun/torchrun tasks), Lightning launches the ranks itself even
    inside a SLURM allocation: its SLURM detection would otherwise expect one task per rank."""
    if cfg.train.world_size == 1 or os.environ.get(ranks.IN_RANKS_ENV) != "1":
        return []
    from lightning.fabric.plugins.environments import LightningEnvironment

    return [LightningEnvironment()]


def should_log_checkpoint(cfg: RunConfig, checkpoint: Path) -> bool:
    if cfg.train.log_checkpoint is not None:
        return cfg.train.log_checkpoint
    return checkpoint.stat().st_size <= AUTO_LOG_CHECKPOINT_BYTES


def PauseAt(step: int, last: Path):  # noqa: N802 - a factory that reads like the callback it builds
    from lightning.pytorch.callbacks import Callback

    class _Pause(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            if trainer.global_step >= step:
                trainer.save_checkpoint(last, weights_only=False)
                trainer.should_stop = True

    return _Pause()


def FencePoll(fence: Fence):  # noqa: N802 - a factory that reads like the callback it builds
    """Stop at the next step boundary once a heartbeat found the worker's claim lost."""
    from lightning.pytorch.callbacks import Callback

    class _FencePoll(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            fence.poll()

    return _FencePoll()
