"""LitLM is the loss, optimizer and checkpoint hooks only; what a run logs comes from the callbacks."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger

from mhmoe.config.run import resolve_run_config
from mhmoe.training.build import build_training


def _logged_names(setup, callbacks: list, folder: Path) -> set[str]:  # noqa: ANN001 - TrainingSetup
    logger = CSVLogger(folder, name="run")
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, val_check_interval=2, check_val_every_n_epoch=None,
                         num_sanity_val_steps=0, logger=logger, callbacks=callbacks, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, use_distributed_sampler=False)
    trainer.fit(setup.lit, datamodule=setup.datamodule)
    metrics = Path(logger.log_dir) / "metrics.csv"
    if not metrics.is_file():
        return set()
    with metrics.open() as handle:
        return {name for row in csv.DictReader(handle) for name, value in row.items() if value and name != "step"}


def test_litlm_logs_nothing_itself_and_the_callbacks_log_the_project_names(tmp_path: Path) -> None:
    cfg = resolve_run_config("debug", None, {"model.ffn": "mhmoe", "moe.heads": 2, "train.max_steps": 2,
                                             "train.val_every": 2, "train.log_every": 1, "data.val_max_windows": 2})
    setup = build_training(cfg)
    assert _logged_names(setup, [], tmp_path / "bare") == set()
    names = _logged_names(setup, list(setup.metrics), tmp_path / "logged")
    assert {"train/loss", "train/aux_loss", "train/z_loss", "train/lr", "train/grad_norm", "train/tokens",
            "perf/tokens_per_s", "perf/mfu", "perf/peak_memory_gib", "val/tokens"} <= names
    assert any(n.startswith("routing/mean/") for n in names) and any(n.startswith("val/") and n.endswith("/ppl")
                                                                    for n in names)
