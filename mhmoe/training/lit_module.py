"""The thin LightningModule: loss, optimizer and schedule, checkpoint hooks. The net is injected;
what gets logged when is :mod:`mhmoe.training.callbacks`."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from mhmoe.config.run import RunConfig
from mhmoe.model import Transformer
from mhmoe.training.accumulate import StepLosses
from mhmoe.training.checkpoint import DIGEST_KEY, state_digest
from mhmoe.training.optim import build_optimizer


class LitLM(pl.LightningModule):
    """Mean next-token cross-entropy + the model's scaled MoE aux losses (docs/MODEL.md, load balancing)."""

    def __init__(self, net: Transformer, config: RunConfig, *, val_names: list[str], tokenizer_spec: str) -> None:
        super().__init__()
        self.net = net
        self.config = config
        # Plain data only, so checkpoints load with torch.load(weights_only=True). Not sent to the
        # logger: the runner logs the flattened config itself (``moe.heads``, not ``config/moe/heads``).
        self.save_hyperparameters(
            {"config": config.to_dict(), "tokenizer": tokenizer_spec, "val_names": list(val_names)}, logger=False
        )
        self.start_step = 0
        """Global step training (re)started from: > 0 after a resume."""

    def forward(self, idx_BT: torch.Tensor):  # noqa: D401 - Lightning hook
        return self.net(idx_BT)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        """The loss to minimise, and (detached, for the logging callback) its parts and the routing stats."""
        inputs, targets = batch
        out = self.net(inputs)
        ce = F.cross_entropy(out.logits.flatten(0, 1).float(), targets.flatten())
        # Not ``out`` itself: its logits would stay alive through backward and the update.
        losses = StepLosses(lb_loss=out.lb_loss.detach(), z_loss=out.z_loss.detach(), routing=out.routing)
        return {"loss": ce + out.aux_loss, "ce": ce.detach(), "losses": losses}

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int,
                        dataloader_idx: int = 0) -> dict[str, Any]:
        """Summed token NLL, token count and routing stats of one batch (summed by the validation callback)."""
        inputs, targets = batch
        out = self.net(inputs)
        nll = F.cross_entropy(out.logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")
        return {"nll": nll.detach(), "tokens": targets.numel(), "routing": out.routing}

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        mixed = str(self.trainer.precision).endswith("-mixed")
        optimizer, scheduler = build_optimizer(self.net, self.config.optim, self.config.train.max_steps,
                                               fused=not mixed)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        self.start_step = self.global_step

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resume at max_steps skips the fit loop (and on_train_start): it still started at this step.
        self.start_step = int(checkpoint.get("global_step", 0))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lets every loader detect weights that were modified or corrupted after saving.
        checkpoint[DIGEST_KEY] = state_digest(checkpoint["state_dict"])
