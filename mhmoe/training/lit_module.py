"""The thin LightningModule: loss, optimizer, and what gets logged when. The net is injected."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.throughput import Throughput
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from mhmoe.checkpoint import DIGEST_KEY, state_digest
from mhmoe.model import Transformer
from mhmoe.run_config import RunConfig
from mhmoe.tracking.heatmap import save_load_heatmap
from mhmoe.tracking.names import divergence_artifact, load_artifact, load_heatmap_artifact, val_metric
from mhmoe.training.accumulate import StepMeans
from mhmoe.training.failures import Diverged
from mhmoe.training.optim import build_optimizer
from mhmoe.training.telemetry import LoadAccumulator, grad_norm, peak_memory_gib, routing_metrics


class LitLM(pl.LightningModule):
    """Mean next-token cross-entropy + the model's scaled MoE aux losses (docs/MODEL.md, load balancing)."""

    def __init__(
        self,
        net: Transformer,
        config: RunConfig,
        *,
        val_names: list[str],
        tokenizer_spec: str,
        train_flops_per_token: float,
        peak_flops: float,
    ) -> None:
        super().__init__()
        self.net = net
        self.config = config
        self.val_names = list(val_names)
        self.train_flops_per_token = train_flops_per_token
        self.peak_flops = peak_flops
        # Plain data only, so checkpoints load with torch.load(weights_only=True). Not sent to the
        # logger: the runner logs the flattened config itself (``moe.heads``, not ``config/moe/heads``).
        self.save_hyperparameters(
            {"config": config.to_dict(), "tokenizer": tokenizer_spec, "val_names": self.val_names}, logger=False
        )
        # Window of 2: the rate over exactly the interval since the previous perf log. Per-device
        # counts and the world size: MFU is against one device's peak, tokens/s over all of them.
        self._throughput = Throughput(available_flops=peak_flops, world_size=config.train.world_size, window_size=2)
        self._interval_step: int | None = None
        """Global step the current throughput interval started after (None: not started in this fit)."""
        self._pending_metrics: dict[str, float] = {}
        self.start_step = 0
        """Global step training (re)started from: > 0 after a resume."""
        self.last_val_metrics: dict[str, float] = {}
        self.last_perf_metrics: dict[str, float] = {}
        """perf/* of the latest logged interval (empty before the first one)."""
        self._val_sums: dict[int, list[torch.Tensor | float]] = {}
        """Per validation set: [summed token NLL (a device tensor once a batch is added), token count]."""
        self._val_load = LoadAccumulator()
        self._step_means = StepMeans(config.train.accumulate_grad_batches)

    # ---- training -----------------------------------------------------------------------------

    def forward(self, idx_BT: torch.Tensor):  # noqa: D401 - Lightning hook
        return self.net(idx_BT)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        out = self.net(inputs)
        ce = F.cross_entropy(out.logits.flatten(0, 1).float(), targets.flatten())
        loss = ce + out.aux_loss
        if self._step_means.accumulate == 1 and self.trainer.world_size == 1:
            self._log_train(ce, out)
        # step means (and their rank collective) only when logged: the `and` skips add() otherwise
        elif (self._logs_at(self.global_step + 1)
              and (step_means := self._step_means.add(ce, out, self._mean_over_ranks)) is not None):
            self._log_train(*step_means)
        return loss

    def _logs_losses(self, step: int) -> bool:
        return step % self.config.train.log_every == 0 or step == 1

    def _logs_routing(self, step: int) -> bool:
        return step % self.config.train.routing_every == 0 or step == 1

    def _logs_at(self, step: int) -> bool:
        return self._logs_losses(step) or self._logs_routing(step)

    def _log_train(self, ce: torch.Tensor, out: Any) -> None:
        """Every log_every steps: losses, LR, throughput, MFU; every routing_every: routing stats."""
        train = self.config.train
        step = self.global_step + 1  # the step this batch completes
        metrics: dict[str, float] = {}
        if self._logs_losses(step):
            # One device->host transfer for the three losses; none on the other steps.
            ce_v, aux_v, z_v = torch.stack([ce.detach(), out.lb_loss.detach(), out.z_loss.detach()]).tolist()
            # Checked on values already on the host: stop at the first non-finite one seen, no extra sync.
            for name, value in (("train/loss", ce_v), ("train/aux_loss", aux_v), ("train/z_loss", z_v)):
                if not math.isfinite(value):
                    raise Diverged(name, value, step)
            # The progress bar reads plain floats: logging the tensor every step would sync every step.
            self.log("loss", ce_v, prog_bar=True, logger=False)
            metrics.update({
                "train/loss": ce_v,
                "train/aux_loss": aux_v,
                "train/z_loss": z_v,
                "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"],
                "train/tokens": float(step * train.batch_size * train.seq_len),
            })
        if self._logs_routing(step):
            metrics.update(routing_metrics(out.routing))
        # Logged in on_train_batch_end, with perf/* timed after this step's backward and update.
        self._pending_metrics = metrics

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # After every micro-batch's backward (and the AMP unscale), before clipping and the update.
        if "train/loss" in self._pending_metrics:
            self._pending_metrics["train/grad_norm"] = grad_norm(self.net.parameters())

    def on_train_start(self) -> None:
        self.start_step = self.global_step
        self._interval_step = None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        metrics, self._pending_metrics = self._pending_metrics, {}
        step = self.global_step  # optimizer steps done (a micro-batch that ends none leaves it as it was)
        if self._interval_step is None:
            # The first step of a fit pays one-off costs (allocator, optimizer state, compile):
            # time from its end, so the first perf/* value is a steady-state rate.
            if step > self.start_step:
                self._start_interval(step)
        elif "train/loss" in metrics and step > self._interval_step:
            metrics.update(self._perf_metrics(step))
        if metrics and self.logger is not None:
            self.logger.log_metrics(metrics, step=step)  # one batched MLflow call

    def on_validation_end(self) -> None:
        if self.trainer.state.fn == "fit":  # validation time is not training throughput
            self._start_interval(self.global_step)

    def _start_interval(self, step: int) -> None:
        self._throughput.reset()
        self._interval_step = None
        self._record_time(step)

    def _record_time(self, step: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # only on logged steps: the GPU has finished the step
        train = self.config.train
        since = 0 if self._interval_step is None else step - self._interval_step
        samples = train.batch_size // train.world_size  # per device and optimizer step
        tokens = samples * train.seq_len
        self._throughput.update(time=time.perf_counter(), batches=step, samples=step * samples, lengths=step * tokens,
                                flops=int(since * tokens * self.train_flops_per_token))
        self._interval_step = step

    def _perf_metrics(self, step: int) -> dict[str, float]:
        """Tokens/s and MFU over the steps since the interval began (the project's FLOP count per token)."""
        self._record_time(step)
        rates = self._throughput.compute()
        tokens_per_s = rates.get("items_per_sec", rates["device/items_per_sec"])  # all devices (world size 1: one)
        self.last_perf_metrics = {"perf/tokens_per_s": tokens_per_s, "perf/mfu": rates["device/mfu"],
                                  "perf/peak_memory_gib": peak_memory_gib(self.device)}
        return dict(self.last_perf_metrics)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        mixed = str(self.trainer.precision).endswith("-mixed")
        optimizer, scheduler = build_optimizer(self.net, self.config.optim, self.config.train.max_steps,
                                               fused=not mixed)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resume at max_steps skips the fit loop (and on_train_start): it still started at this step.
        self.start_step = int(checkpoint.get("global_step", 0))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lets every loader detect weights that were modified or corrupted after saving.
        checkpoint[DIGEST_KEY] = state_digest(checkpoint["state_dict"])

    # ---- validation ---------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val_sums = {i: [0.0, 0] for i in range(len(self.val_names))}
        self._val_load = LoadAccumulator()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int,
                        dataloader_idx: int = 0) -> None:
        inputs, targets = batch
        out = self.net(inputs)
        nll = F.cross_entropy(out.logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")
        sums = self._val_sums[dataloader_idx]
        sums[0] = sums[0] + nll.detach().double()  # stays on device; read once per validation
        sums[1] += targets.numel()
        if dataloader_idx == 0:  # load matrices from the first (in-domain) set
            self._val_load.add(out.routing)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        step = self.global_step
        train = self.config.train
        metrics = {"val/tokens": float(step * train.batch_size * train.seq_len)}
        for i, name in enumerate(self.val_names):
            total, count = self._reduced_val_sums(i)
            if count:
                loss = float(total) / count
                if not math.isfinite(loss):
                    raise Diverged(val_metric(name, "loss"), loss, step)
                metrics[val_metric(name, "loss")] = loss
                metrics[val_metric(name, "ppl")] = math.exp(min(loss, 50.0))
        self.last_val_metrics = metrics
        first = val_metric(self.val_names[0], "ppl")
        if first in metrics:
            self.log("val_ppl", metrics[first], prog_bar=True, logger=False)
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=step)
            self._log_load_matrices(step)

    def _mean_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        """Step-mean losses averaged over data-parallel ranks (the whole optimizer batch's mean)."""
        if self.trainer.world_size == 1:
            return values
        return self.trainer.strategy.reduce(values, reduce_op="mean")

    def _reduced_val_sums(self, index: int) -> tuple[float, int]:
        """(summed token NLL, token count) of validation set ``index`` over all data-parallel ranks."""
        total, count = self._val_sums[index]
        if self.trainer.world_size == 1:
            return float(total), int(count)
        sums = torch.tensor([float(total), float(count)], dtype=torch.float64, device=self.device)
        total, count = self.trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        return total, int(count)

    def _log_load_matrices(self, step: int) -> None:
        if self.trainer.world_size > 1:
            self._val_load.reduce(lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        load, divergence = self._val_load.matrices()
        if load.size == 0:
            return
        if not isinstance(self.logger, MLFlowLogger):  # artifacts go to the run's MLflow record
            return
        run_id = self.logger.run_id
        if run_id is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            for rel, array in ((load_artifact(step), load), (divergence_artifact(step), divergence)):
                path = Path(tmp) / Path(rel).name
                np.save(path, array)
                self.logger.experiment.log_artifact(run_id, str(path), str(Path(rel).parent))
            picture = Path(tmp) / Path(load_heatmap_artifact(step)).name
            save_load_heatmap(load, picture, step=step, layer_names=[f"block {b}" for b in self._val_load.blocks()])
            self.logger.experiment.log_artifact(run_id, str(picture), str(Path(load_heatmap_artifact(step)).parent))
