"""What a run logs, as Lightning callbacks beside the thin :class:`~mhmoe.training.lit_module.LitLM`.

:class:`TrainMetrics`: every ``train.log_every`` steps the losses, LR, gradient norm, tokens/s and
MFU (``train/*``, ``perf/*``), every ``train.routing_every`` the routing statistics (``routing/*``),
in one batched MLflow call per logged step. :class:`ValidationMetrics`: each validation's loss and
perplexity per set (``val/*``) and the load matrices. Both read what ``training_step`` and
``validation_step`` return, so the host syncs stay on the logged steps.

Throughput uses Lightning's :class:`~lightning.fabric.utilities.throughput.Throughput`, not its
``ThroughputMonitor`` callback: that one times (and on a GPU synchronizes) every step and logs
under its own names, where ours are ``perf/*`` over the steps since the previous log.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from lightning.fabric.utilities.throughput import Throughput
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger

from mhmoe.config.run import TrainConfig
from mhmoe.tracking.heatmap import save_load_heatmap
from mhmoe.tracking.names import divergence_artifact, load_artifact, load_heatmap_artifact, val_metric
from mhmoe.training.accumulate import StepLosses, StepMeans
from mhmoe.training.failures import Diverged
from mhmoe.training.telemetry import LoadAccumulator, grad_norm, peak_memory_gib, routing_metrics

C = TypeVar("C", bound=Callback)


def callback_of(trainer: Any, kind: type[C]) -> C | None:
    """The trainer's callback of ``kind`` (None when it has none)."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, kind)), None)


def validation_metrics(trainer: Any) -> dict[str, float]:
    """``val/*`` of the latest validation (empty before the first one)."""
    found = callback_of(trainer, ValidationMetrics)
    return dict(found.last_val_metrics) if found else {}


def perf_metrics(trainer: Any) -> dict[str, float]:
    """``perf/*`` of the latest logged interval (empty before the first one)."""
    found = callback_of(trainer, TrainMetrics)
    return dict(found.perf.last) if found else {}


class TrainMetrics(Callback):
    """``train/*`` and ``perf/*`` every ``log_every`` steps, ``routing/*`` every ``routing_every`` (and at step 1)."""

    def __init__(self, train: TrainConfig, *, flops_per_token: float, peak_flops: float) -> None:
        self.train = train
        self.perf = PerfMeter(train, flops_per_token=flops_per_token, peak_flops=peak_flops)
        self._step_means = StepMeans(train.accumulate_grad_batches)
        self._step_before = 0
        """Global step when the current micro-batch started: it belongs to the step after it."""
        self._optimizer_metrics: dict[str, float] = {}
        self._start_step = 0

    def logs_losses(self, step: int) -> bool:
        return step % self.train.log_every == 0 or step == 1

    def logs_routing(self, step: int) -> bool:
        return step % self.train.routing_every == 0 or step == 1

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001 - Lightning hook
        self._start_step = trainer.global_step
        self.perf.stop()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self._step_before = trainer.global_step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        # After every micro-batch's backward (and the AMP unscale), before clipping, the update and the
        # LR schedule's step: the gradient and the LR this step uses.
        if self.logs_losses(trainer.global_step + 1):
            self._optimizer_metrics = {"train/grad_norm": grad_norm(pl_module.parameters()),
                                       "train/lr": optimizer.param_groups[0]["lr"]}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        metrics = self._step_metrics(trainer, pl_module, outputs, self._step_before + 1)
        step = trainer.global_step  # optimizer steps done (a micro-batch that ends none leaves it as it was)
        if not self.perf.started:
            # The first step of a fit pays one-off costs (allocator, optimizer state, compile):
            # time from its end, so the first perf/* value is a steady-state rate.
            if step > self._start_step:
                self.perf.start(step, pl_module.device)
        elif "train/loss" in metrics and step > self.perf.interval_step:
            metrics.update(self.perf.metrics(step, pl_module.device))
        if metrics and trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=step)  # one batched MLflow call

    def on_validation_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if trainer.state.fn == "fit":  # validation time is not training throughput
            self.perf.start(trainer.global_step, pl_module.device)

    def _step_metrics(self, trainer, pl_module, outputs: dict[str, Any], step: int) -> dict[str, float]:  # noqa: ANN001
        """The losses and routing stats of ``step`` once its last micro-batch is in (else nothing)."""
        if not (self.logs_losses(step) or self.logs_routing(step)):
            return {}
        over_ranks = None if trainer.world_size == 1 else (lambda t: trainer.strategy.reduce(t, reduce_op="mean"))
        # Step means (a collective over ranks) only on logged steps: every rank completes them in lockstep.
        means = self._step_means.add(outputs["ce"], outputs["losses"], over_ranks)
        if means is None:
            return {}
        ce, losses = means
        metrics: dict[str, float] = {}
        if self.logs_losses(step):
            metrics.update(self._loss_metrics(pl_module, ce, losses, step))
        if self.logs_routing(step):
            metrics.update(routing_metrics(losses.routing))
        return metrics

    def _loss_metrics(self, pl_module, ce: torch.Tensor, losses: StepLosses, step: int) -> dict[str, float]:  # noqa: ANN001
        # One device->host transfer for the three losses; none on the other steps.
        ce_v, aux_v, z_v = torch.stack([ce, losses.lb_loss, losses.z_loss]).tolist()
        # Checked on values already on the host: stop at the first non-finite one seen, no extra sync.
        for name, value in (("train/loss", ce_v), ("train/aux_loss", aux_v), ("train/z_loss", z_v)):
            if not math.isfinite(value):
                raise Diverged(name, value, step)
        # The progress bar reads plain floats: logging the tensor every step would sync every step.
        pl_module.log("loss", ce_v, prog_bar=True, logger=False)
        optimizer_metrics, self._optimizer_metrics = self._optimizer_metrics, {}
        return {"train/loss": ce_v, "train/aux_loss": aux_v, "train/z_loss": z_v, **optimizer_metrics,
                "train/tokens": float(step * self.train.batch_size * self.train.seq_len)}


class PerfMeter:
    """Tokens/s and MFU over the steps since the interval began (the project's FLOP count per token,
    one device's fixed peak from :mod:`mhmoe.training.peak`)."""

    def __init__(self, train: TrainConfig, *, flops_per_token: float, peak_flops: float) -> None:
        self.train = train
        self.flops_per_token = flops_per_token
        # Window of 2: the rate over exactly the interval since the previous perf log. Per-device
        # counts and the world size: MFU is against one device's peak, tokens/s over all of them.
        self._throughput = Throughput(available_flops=peak_flops, world_size=train.world_size, window_size=2)
        self.interval_step: int | None = None
        """Global step the current interval started after (None: not started in this fit)."""
        self.last: dict[str, float] = {}
        """perf/* of the latest logged interval (empty before the first one)."""

    @property
    def started(self) -> bool:
        return self.interval_step is not None

    def stop(self) -> None:
        self.interval_step = None

    def start(self, step: int, device: torch.device) -> None:
        self._throughput.reset()
        self.interval_step = None
        self._record_time(step, device)

    def metrics(self, step: int, device: torch.device) -> dict[str, float]:
        self._record_time(step, device)
        rates = self._throughput.compute()
        tokens_per_s = rates.get("items_per_sec", rates["device/items_per_sec"])  # all devices (world size 1: one)
        self.last = {"perf/tokens_per_s": tokens_per_s, "perf/mfu": rates["device/mfu"],
                     "perf/peak_memory_gib": peak_memory_gib(device)}
        return dict(self.last)

    def _record_time(self, step: int, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # only on logged steps: the GPU has finished the step
        since = 0 if self.interval_step is None else step - self.interval_step
        samples = self.train.batch_size // self.train.world_size  # per device and optimizer step
        tokens = samples * self.train.seq_len
        self._throughput.update(time=time.perf_counter(), batches=step, samples=step * samples, lengths=step * tokens,
                                flops=int(since * tokens * self.flops_per_token))
        self.interval_step = step


class ValidationMetrics(Callback):
    """Per validation set ``val/<set>/loss`` and ``ppl`` (token means over all ranks), and the first set's
    load and divergence matrices as MLflow artifacts."""

    def __init__(self, train: TrainConfig, val_names: list[str]) -> None:
        self.train = train
        self.val_names = list(val_names)
        self.last_val_metrics: dict[str, float] = {}
        self._sums: dict[int, list[torch.Tensor | float]] = {}
        """Per validation set: [summed token NLL (a device tensor once a batch is added), token count]."""
        self._load = LoadAccumulator()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._sums = {i: [0.0, 0] for i in range(len(self.val_names))}
        self._load = LoadAccumulator()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,  # noqa: ANN001
                                dataloader_idx: int = 0) -> None:
        sums = self._sums[dataloader_idx]
        sums[0] = sums[0] + outputs["nll"].double()  # stays on device; read once per validation
        sums[1] += outputs["tokens"]
        if dataloader_idx == 0:  # load matrices from the first (in-domain) set
            self._load.add(outputs["routing"])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if trainer.sanity_checking:
            return
        step = trainer.global_step
        metrics = {"val/tokens": float(step * self.train.batch_size * self.train.seq_len)}
        for i, name in enumerate(self.val_names):
            total, count = self._reduced_sums(trainer, pl_module.device, i)
            if count:
                loss = float(total) / count
                if not math.isfinite(loss):
                    raise Diverged(val_metric(name, "loss"), loss, step)
                metrics[val_metric(name, "loss")] = loss
                metrics[val_metric(name, "ppl")] = math.exp(min(loss, 50.0))
        self.last_val_metrics = metrics
        first = val_metric(self.val_names[0], "ppl")
        if first in metrics:
            pl_module.log("val_ppl", metrics[first], prog_bar=True, logger=False)
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=step)
            self._log_load_matrices(trainer, step)

    def _reduced_sums(self, trainer, device: torch.device, index: int) -> tuple[float, int]:  # noqa: ANN001
        """(summed token NLL, token count) of validation set ``index`` over all data-parallel ranks."""
        total, count = self._sums[index]
        if trainer.world_size == 1:
            return float(total), int(count)
        sums = torch.tensor([float(total), float(count)], dtype=torch.float64, device=device)
        total, count = trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        return total, int(count)

    def _log_load_matrices(self, trainer, step: int) -> None:  # noqa: ANN001
        if trainer.world_size > 1:
            self._load.reduce(lambda t: trainer.strategy.reduce(t, reduce_op="sum"))
        load, divergence = self._load.matrices()
        logger = trainer.logger
        if load.size == 0 or not isinstance(logger, MLFlowLogger):  # artifacts go to the run's MLflow record
            return
        run_id = logger.run_id
        if run_id is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            for rel, array in ((load_artifact(step), load), (divergence_artifact(step), divergence)):
                path = Path(tmp) / Path(rel).name
                np.save(path, array)
                logger.experiment.log_artifact(run_id, str(path), str(Path(rel).parent))
            picture = Path(tmp) / Path(load_heatmap_artifact(step)).name
            save_load_heatmap(load, picture, step=step, layer_names=[f"block {b}" for b in self._load.blocks()])
            logger.experiment.log_artifact(run_id, str(picture), str(Path(load_heatmap_artifact(step)).parent))
