"""Step 1 of ``train()``: the data module, the model and the LightningModule of one run."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import torch

from mhmoe.config.run import RunConfig
from mhmoe.model import build_model
from mhmoe.sizing.budget import train_flops_per_token
from mhmoe.store.home import home_subdir
from mhmoe.training.hardware import Precision, resolve_accelerator, resolve_precision
from mhmoe.training.preflight import check_device_memory


@dataclass(frozen=True)
class TrainingSetup:
    """Everything a run trains with, built before any MLflow run or checkpoint folder exists."""

    cfg: RunConfig
    """The run's config with ``model.vocab_size`` set to the vocabulary the tokenizer built."""
    datamodule: Any  # MHMoEDataModule (Lightning, imported when training starts)
    lit: Any  # LitLM
    metrics: list  # the logging callbacks (TrainMetrics, ValidationMetrics)
    accelerator: str
    precision: Precision
    peak_flops: float
    """The MFU denominator (:mod:`mhmoe.training.peak`)."""
    peak_source: str = "config"
    measured_flops: float = 0.0
    """A matmul timed at start-up: recorded beside the peak, not divided by (it varies run to run)."""


def build_training(cfg: RunConfig) -> TrainingSetup:
    """Threads, accelerator and precision, the memory preflight, then data, model, LitLM and its logging callbacks."""
    # Lightning and the data/model modules are imported here, when a run starts: importing the
    # training package (find_checkpoint_dir, TrainResult) stays cheap.
    import lightning.pytorch as pl

    from mhmoe.data.datamodule import MHMoEDataModule
    from mhmoe.training.callbacks import TrainMetrics, ValidationMetrics
    from mhmoe.training.lit_module import LitLM
    from mhmoe.training.peak import measure_peak_flops, peak_flops

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    accelerator = resolve_accelerator(cfg)
    precision = resolve_precision(cfg, accelerator)
    check_device_memory(cfg)  # before anything is created: one line naming a micro_batch_size that fits

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
    peak = peak_flops(device, dtype, cfg.train.peak_flops)
    flops_per_token = train_flops_per_token(cfg.architecture, seq_len=cfg.train.seq_len)
    lit = LitLM(net, cfg, val_names=datamodule.val_names, tokenizer_spec=datamodule.tokenizer.spec)
    metrics = [TrainMetrics(cfg.train, flops_per_token=flops_per_token, peak_flops=peak.flops),
               ValidationMetrics(cfg.train, datamodule.val_names)]
    return TrainingSetup(cfg=cfg, datamodule=datamodule, lit=lit, metrics=metrics, accelerator=accelerator,
                         precision=precision, peak_flops=peak.flops, peak_source=peak.source,
                         measured_flops=measure_peak_flops(device, dtype))
