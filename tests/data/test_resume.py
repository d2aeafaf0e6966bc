"""Exact resume through a real Lightning Trainer: crash, resume from the checkpoint, same batches."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mhmoe.config.data import DataConfig
from mhmoe.data.datamodule import MHMoEDataModule

MAX_STEPS = 9


class Crash(RuntimeError):
    pass


class Recorder(L.LightningModule):
    """Trivial model that remembers every training batch it sees (and can crash on purpose)."""

    def __init__(self, crash_at_step: int | None = None) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.crash_at_step = crash_at_step
        self.seen: list[torch.Tensor] = []
        self.val_batches = 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.global_step == self.crash_at_step:
            raise Crash(f"crash at step {self.global_step}")
        inputs, targets = batch
        self.seen.append(torch.cat([inputs, targets[:, -1:]], dim=1))
        return self.weight * inputs.float().mean()

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.val_batches += 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(root: Path, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", devices=1, max_steps=MAX_STEPS, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, val_check_interval=2, check_val_every_n_epoch=None,
        limit_val_batches=1, num_sanity_val_steps=0, **kwargs,
    )


def datamodule(data: DataConfig) -> MHMoEDataModule:
    return MHMoEDataModule(data, seq_len=16, batch_size=3, seed=7, max_steps=MAX_STEPS, val_max_windows=4)


@pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")
@pytest.mark.parametrize("checkpoint_step", [3, 4])  # 4 coincides with a validation step
def test_resumed_run_sees_exactly_the_uninterrupted_batches(tmp_path: Path, checkpoint_step: int) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(300)))
    data = DataConfig(corpus=(str(corpus),), val_sets=("pydoc",), tokenizer="byte")

    straight = Recorder()
    trainer(tmp_path / "straight", enable_checkpointing=False).fit(straight, datamodule=datamodule(data))
    assert len(straight.seen) == MAX_STEPS

    crashed = Recorder(crash_at_step=checkpoint_step + 2)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=checkpoint_step, save_top_k=-1,
                                  filename="{step}")
    with pytest.raises(Crash):
        trainer(tmp_path / "crashed", callbacks=[checkpoints]).fit(crashed, datamodule=datamodule(data))
    ckpt = tmp_path / "ckpt" / f"step={checkpoint_step}.ckpt"
    saved = torch.load(ckpt, weights_only=False)
    assert saved["MHMoEDataModule"] == {"consumed_batches": checkpoint_step}

    resumed, resumed_data = Recorder(), datamodule(data)
    trainer(tmp_path / "resumed", enable_checkpointing=False).fit(resumed, datamodule=resumed_data, ckpt_path=ckpt)
    assert resumed_data.consumed_batches == checkpoint_step  # load_state_dict ran before the loaders were built
    replay = crashed.seen[:checkpoint_step] + resumed.seen
    assert len(replay) == MAX_STEPS
    assert all(torch.equal(a, b) for a, b in zip(replay, straight.seen, strict=True))
    assert resumed.val_batches > 0
