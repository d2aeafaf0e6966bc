"""``train()``: one run from a RunConfig to a finished MLflow run and a final checkpoint.

Used by ``mhmoe train`` and by every sweep worker. Resuming continues the same MLflow run from
the newest usable checkpoint in ``checkpoint_dir`` (``last.ckpt``, else ``previous.ckpt``) with
optimizer, schedule and data position restored, so a resumed run reproduces the loss curve of an
uninterrupted one on CPU.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mhmoe.budget import summary, train_flops_per_token
from mhmoe.checkpoint import CheckpointError
from mhmoe.home import artifact_root_for, default_tracking_uri, home_subdir
from mhmoe.memory import check_cuda_memory
from mhmoe.model import build_model
from mhmoe.run_config import RunConfig
from mhmoe.tracking.applicable import applicable_params
from mhmoe.tracking.client import mlflow_client
from mhmoe.tracking.datasets import dataset_inputs
from mhmoe.tracking.display import display_name
from mhmoe.tracking.names import (
    CHECKPOINT_ARTIFACT_DIR,
    CONFIG_ARTIFACT,
    ROLE_TRAIN,
    TAG_CHECKPOINT,
    TAG_COMMAND,
    TAG_DISPLAY_NAME,
    TAG_FAILURE,
    TAG_GIT_COMMIT,
    TAG_ROLE,
    TAG_SEED,
    TAG_VARIANT,
)
from mhmoe.tracking.provenance import command_line, git_commit
from mhmoe.tracking.standard import describe_experiment, source_tags
from mhmoe.training import ranks
from mhmoe.training.checkpoint_files import FINAL, LAST, ResumePick, pick_resume_checkpoint
from mhmoe.training.failures import Fence, LostClaim, failure_reason


@dataclass
class TrainResult:
    run_id: str
    checkpoint_path: Path
    metrics: dict[str, float]
    start_step: int
    final_step: int


def resolve_precision(config: RunConfig, accelerator: str) -> str:
    """fp32 on CPU (bf16 is ~100x slower without AMX), bf16-mixed on GPU unless set."""
    if config.train.precision != "auto":
        return config.train.precision
    return "bf16-mixed" if accelerator == "gpu" else "32-true"


def resolve_accelerator(config: RunConfig) -> str:
    acc = config.train.accelerator
    if acc == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if acc == "cuda" else acc


def parallel_trainer_kwargs(cfg: RunConfig) -> dict:
    """Trainer arguments for devices, ranks and micro-batches.

    The data module shards every optimizer batch over ranks itself (no DistributedSampler) and
    serves micro-batches, so Lightning's batch counts (validation interval) are in micro-batches.
    """
    train = cfg.train
    strategy = train.strategy
    if strategy == "auto" and train.world_size > 1:
        strategy = "ddp"
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


def new_run_dir() -> Path:
    return home_subdir("checkpoints", "runs")


def train(
    cfg: RunConfig,
    *,
    tracking_uri: str | None = None,
    experiment_name: str = "mhmoe",
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    fence: Fence | None = None,
    resume_pick: ResumePick | None = None,
    callbacks: list | None = None,
    rank_zero_hooks: ranks.RankZeroHooks | None = None,
) -> TrainResult:
    """Train ``cfg``; with ``resume``, continue MLflow run ``run_id`` from its newest usable checkpoint.

    Resume loads ``last.ckpt``, or ``previous.ckpt`` when the last one is unreadable or fails its
    digest; with neither usable it raises :class:`~mhmoe.checkpoint.CheckpointError` before
    anything is created (a sweep worker, which must not lose the point, sets them aside and
    restarts instead). ``resume_pick`` is that choice when the caller already made it.
    ``stop_after`` pauses the run at that global step with a resumable ``last.ckpt`` (for
    preemptible jobs with a time limit); the schedule still targets ``train.max_steps``.
    ``fence`` (a sweep worker's claim) is checked before every checkpoint write and polled every
    step; once lost, training stops and writes nothing more: no checkpoint, metric or run status.
    ``callbacks`` are extra Lightning callbacks (a sweep worker's per-validation report).
    With ``train.devices > 1`` training runs in rank processes, which cannot receive objects:
    ``fence`` stays in this process and stops them once lost, and rank 0 builds its own fence and
    callbacks from ``rank_zero_hooks`` (``callbacks`` are not used there).
    """
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from mhmoe.data.datamodule import MHMoEDataModule
    from mhmoe.training.checkpoint_io import AtomicCheckpointIO
    from mhmoe.training.lit_module import LitLM
    from mhmoe.training.peak import measure_peak_flops

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    tracking_uri = tracking_uri or default_tracking_uri()
    if cfg.train.world_size > 1 and not ranks.launched_as_rank():
        resume_checkpoint(checkpoint_dir, resume, resume_pick)  # an unusable one fails here, once
        return ranks.train_in_rank_processes(
            cfg, tracking_uri=tracking_uri, experiment_name=experiment_name, run_name=run_name, tags=tags,
            parent_run_id=parent_run_id, run_id=run_id, checkpoint_dir=checkpoint_dir, resume=resume,
            progress=progress, stop_after=stop_after, fence=fence, rank_zero_hooks=rank_zero_hooks)
    rank = ranks.global_rank()
    if rank > 0:
        run_id, checkpoint_dir = ranks.inherited_run(run_id, checkpoint_dir)
    ckpt_path = resume_checkpoint(checkpoint_dir, resume, resume_pick)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    accelerator = resolve_accelerator(cfg)
    precision = resolve_precision(cfg, accelerator)
    check_cuda_memory(cfg)  # before anything is created: one line naming a micro_batch_size that fits

    datamodule = MHMoEDataModule(cfg.data, seq_len=cfg.train.seq_len, batch_size=cfg.train.batch_size,
                                 seed=cfg.seed, max_steps=cfg.train.max_steps,
                                 micro_batch_size=cfg.train.micro_batch)
    datamodule.prepare_data()
    # The tokenizer decides the vocabulary; the logged config records the size actually built.
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=datamodule.vocab_size))

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    net = build_model(cfg.architecture, activation_checkpointing=cfg.train.activation_checkpointing)
    if cfg.train.compile:
        # Module.compile keeps parameter names (no ``_orig_mod.``), so checkpoints stay loadable.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(home_subdir("inductor")))
        net.compile()
    # This rank's GPU: Lightning selects it only later, and a rank >= 1 must not touch device 0.
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if accelerator == "gpu" else torch.device("cpu")
    dtype = torch.bfloat16 if "bf16" in precision else (torch.float16 if precision.startswith("16") else torch.float32)
    peak = cfg.train.peak_flops or measure_peak_flops(device, dtype)
    flops_per_token = train_flops_per_token(cfg.architecture, seq_len=cfg.train.seq_len)
    lit = LitLM(net, cfg, val_names=datamodule.val_names, tokenizer_spec=datamodule.tokenizer.spec,
                train_flops_per_token=flops_per_token, peak_flops=peak)

    commit = git_commit()
    all_tags = {TAG_ROLE: ROLE_TRAIN, TAG_VARIANT: cfg.variant, TAG_DISPLAY_NAME: display_name(cfg),
                TAG_SEED: str(cfg.seed), TAG_GIT_COMMIT: commit, TAG_COMMAND: command_line(), **source_tags(commit),
                **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    artifact_location = artifact_root_for(tracking_uri)
    logger = FencedMLFlowLogger(fence, experiment_name=experiment_name, run_name=run_name or cfg.variant,
                                tracking_uri=tracking_uri, tags=all_tags if run_id is None else None, run_id=run_id,
                                artifact_location=artifact_location)
    run_id = logger.run_id
    if rank == 0:
        describe_experiment(logger.experiment, logger.experiment_id)
    # Recorded in every checkpoint so evaluation can log back to the run the weights came from.
    lit.hparams["mlflow_run_id"] = run_id
    lit.hparams["tracking_uri"] = tracking_uri
    if resume:  # tags of a resumed run may have changed (attempt counter)
        for key, value in all_tags.items():
            logger.experiment.set_tag(run_id, key, value)

    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else new_run_dir() / run_id
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    ranks.share_with_ranks(run_id, checkpoint_dir)
    last = checkpoint_dir / LAST
    if not ckpt_path and rank == 0:
        params = {**applicable_params(cfg.flat(), cfg.model.ffn),
                  **summary(cfg.architecture, seq_len=cfg.train.seq_len),
                  "perf.peak_flops": peak, "train.precision_resolved": precision, "variant": cfg.variant}
        # A retry that died before its first checkpoint reuses its run: MLflow refuses to change a
        # logged param (the re-measured peak differs), so log only what is not there yet.
        logged = logger.experiment.get_run(run_id).data.params
        logger.log_hyperparams({k: v for k, v in params.items() if k not in logged})
        logger.experiment.log_text(run_id, cfg.to_yaml(), CONFIG_ARTIFACT)
        logger.experiment.log_inputs(run_id, datasets=dataset_inputs(
            cfg.data, len(datamodule.train_stream), {k: len(v) for k, v in datamodule.val_streams.items()},
            datamodule.tokenizer.spec))

    every = cfg.train.checkpoint_every or cfg.train.val_every
    checkpoint_cb = ModelCheckpoint(dirpath=checkpoint_dir, filename="step{step:07d}", save_last=True,
                                    save_top_k=0, every_n_train_steps=every, save_on_train_epoch_end=False)
    callbacks = [checkpoint_cb] + ([PauseAt(stop_after, last)] if stop_after else []) \
        + ([FencePoll(fence)] if fence else []) + list(callbacks or [])
    trainer = pl.Trainer(
        accelerator=accelerator, precision=precision, max_steps=cfg.train.max_steps,
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
            return TrainResult(run_id=run_id, checkpoint_path=last, metrics=dict(lit.last_val_metrics),
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
    return TrainResult(run_id=run_id, checkpoint_path=final, metrics=dict(lit.last_val_metrics),
                       start_step=lit.start_step, final_step=trainer.global_step)


AUTO_LOG_CHECKPOINT_BYTES = 256 * 2**20
"""``train.log_checkpoint`` unset: checkpoints up to this size are logged (debug..small presets)."""


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


def start_system_metrics(run_id: str, tracking_uri: str, interval_s: float = 10.0):
    """MLflow's system-metrics monitor (CPU, memory, GPU when present) on the run, continuing its steps."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, resume_logging=True, tracking_uri=tracking_uri)
    monitor.start()
    return monitor


def resume_checkpoint(checkpoint_dir: Path | None, resume: bool, pick: ResumePick | None = None) -> str | None:
    """The checkpoint a resume loads (None: start at step 0); raises when checkpoints exist but none is usable."""
    if not resume or checkpoint_dir is None:
        return None
    pick = pick or pick_resume_checkpoint(Path(checkpoint_dir))
    if pick.path is None and pick.problems:
        raise CheckpointError(f"no usable checkpoint in {checkpoint_dir}: " + "; ".join(pick.problems))
    if pick.problems:
        print(f"warning: resuming from {pick.path.name}: " + "; ".join(pick.problems), file=sys.stderr)
    return str(pick.path) if pick.path else None


def FencePoll(fence: Fence):  # noqa: N802 - a factory that reads like the callback it builds
    """Stop at the next step boundary once a heartbeat found the worker's claim lost."""
    from lightning.pytorch.callbacks import Callback

    class _FencePoll(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            fence.poll()

    return _FencePoll()


def FencedMLFlowLogger(fence: Fence | None, **kwargs):  # noqa: N802 - a factory that reads like the class it builds
    """Lightning's MLFlowLogger that goes silent once ``fence`` is lost (the run has a new owner)."""
    from lightning.pytorch.loggers import MLFlowLogger

    class _Fenced(MLFlowLogger):
        def log_metrics(self, metrics, step=None) -> None:  # noqa: ANN001
            if fence is None or not fence.lost.is_set():
                super().log_metrics(metrics, step)

        def finalize(self, status: str = "success") -> None:
            if fence is None or not fence.lost.is_set():
                super().finalize(status)

    return _Fenced(**kwargs)


def find_checkpoint_dir(run_id: str, tracking_uri: str | None = None) -> Path:
    """Checkpoint folder of an earlier run: its recorded final checkpoint's folder, else the default."""
    recorded = mlflow_client(tracking_uri).get_run(run_id).data.tags.get(TAG_CHECKPOINT)
    return Path(recorded).parent if recorded else new_run_dir() / run_id
