"""Step 2 of ``train()``: open the run's MLflow run, or reopen it on resume.

Tags (role, variant, provenance, the caller's), the parent run, and on a fresh start the params,
the config artifact and the datasets. Only rank 0 describes the experiment and logs params.
"""

from __future__ import annotations

from typing import Any

from mhmoe.sizing.budget import summary
from mhmoe.sizing.memory import estimate_memory
from mhmoe.store.home import artifact_root_for
from mhmoe.tracking.applicable import applicable_params
from mhmoe.tracking.datasets import dataset_inputs
from mhmoe.tracking.display import display_name
from mhmoe.tracking.names import (
    CONFIG_ARTIFACT,
    ROLE_TRAIN,
    TAG_COMMAND,
    TAG_DISPLAY_NAME,
    TAG_GIT_COMMIT,
    TAG_ROLE,
    TAG_SEED,
    TAG_VARIANT,
)
from mhmoe.tracking.provenance import command_line, git_commit
from mhmoe.tracking.standard import describe_experiment, source_tags
from mhmoe.training.build import TrainingSetup
from mhmoe.training.failures import Fence


def open_run(setup: TrainingSetup, *, tracking_uri: str, experiment_name: str, run_name: str | None,
             tags: dict[str, str] | None, parent_run_id: str | None, run_id: str | None, resume: bool,
             log_inputs: bool, rank: int, fence: Fence | None) -> Any:
    """The run's Lightning logger (``.run_id``), silent once ``fence`` is lost.

    A new run (``run_id`` None) is created with its tags; ``resume`` sets them again (the tags of a
    resumed run may have changed: attempt counter). ``log_inputs`` (a start at step 0) logs the
    params, the config artifact and the datasets on rank 0.
    """
    cfg, lit = setup.cfg, setup.lit
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
    if log_inputs and rank == 0:
        _log_inputs(logger, run_id, setup)
    return logger


def _log_inputs(logger: Any, run_id: str, setup: TrainingSetup) -> None:
    cfg, datamodule = setup.cfg, setup.datamodule
    params = {**applicable_params(cfg.flat(), cfg.model.ffn), **summary(cfg.architecture, seq_len=cfg.train.seq_len),
              "perf.peak_flops": setup.peak_flops, "perf.peak_source": setup.peak_source,
              "perf.measured_matmul_flops": round(setup.measured_flops), "train.precision_resolved": setup.precision,
              "memory.estimate_gib": round(estimate_memory(cfg, setup.precision).total / 2**30, 4),
              "variant": cfg.variant}
    # A retry that died before its first checkpoint reuses its run: MLflow refuses to change a
    # logged param (the re-measured peak differs), so log only what is not there yet.
    logged = logger.experiment.get_run(run_id).data.params
    logger.log_hyperparams({k: v for k, v in params.items() if k not in logged})
    logger.experiment.log_text(run_id, cfg.to_yaml(), CONFIG_ARTIFACT)
    logger.experiment.log_inputs(run_id, datasets=dataset_inputs(
        cfg.data, len(datamodule.train_stream), {k: len(v) for k, v in datamodule.val_streams.items()},
        datamodule.tokenizer.spec))


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


def start_system_metrics(run_id: str, tracking_uri: str, interval_s: float = 10.0):
    """MLflow's system-metrics monitor (CPU, memory, GPU when present) on the run, continuing its steps."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, resume_logging=True, tracking_uri=tracking_uri)
    monitor.start()
    return monitor
