from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mhmoe.config.data import DataConfig, DataError
from mhmoe.data.datamodule import MHMoEDataModule, val_window_starts
from mhmoe.data.tokenizer import load_tokenizer
from mhmoe.data.tokens import val_stream

T, B = 16, 4


@pytest.fixture()
def data(tmp_path: Path) -> DataConfig:
    train = tmp_path / "train.txt"
    train.write_text("".join(f"{i} bottles of beer on the wall, {i} bottles of beer.\n" for i in range(200)))
    held = tmp_path / "held.txt"
    held.write_text("".join(f"held-out line number {i}\n" for i in range(40)))
    return DataConfig(corpus=(str(train),), val_sets=(f"held={held}", "pydoc"), tokenizer="byte")


def module(data: DataConfig, **kwargs) -> MHMoEDataModule:
    args = {"seq_len": T, "batch_size": B, "seed": 0, "max_steps": 6} | kwargs
    dm = MHMoEDataModule(data, **args)
    dm.setup("fit")
    return dm


def train_batches(dm: MHMoEDataModule) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(dm.train_dataloader())


def test_batches_are_shifted_int64_windows(data: DataConfig) -> None:
    dm = module(data)
    assert dm.vocab_size == 257 and dm.val_names == ["held", "pydoc"]
    batches = train_batches(dm)
    assert len(dm.train_dataloader()) == len(batches) == 6  # one epoch = max_steps batches
    for inputs, targets in batches:
        assert inputs.shape == targets.shape == (B, T) and inputs.dtype == targets.dtype == torch.int64
        assert torch.equal(inputs[:, 1:], targets[:, :-1])
        assert int(targets.max()) < dm.vocab_size
        # Each row is a real slice of the training stream.
        stream = torch.from_numpy(np.asarray(dm.train_stream, dtype=np.int64))
        for row in inputs:
            starts = (stream.unfold(0, T, 1) == row).all(dim=1).nonzero()
            assert len(starts) >= 1


def test_setup_is_idempotent(data: DataConfig) -> None:
    dm = module(data)
    stream = dm.train_stream
    dm.setup("fit")
    dm.prepare_data()
    assert dm.train_stream is stream


def test_training_windows_depend_only_on_seed_and_sample_index(data: DataConfig) -> None:
    first, again = train_batches(module(data, seed=1)), train_batches(module(data, seed=1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    other = train_batches(module(data, seed=2))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    # Sample i is the same whatever the batch size: rows of B=4 batches equal rows of B=2 batches.
    halves = train_batches(module(data, seed=1, batch_size=2, max_steps=12))
    assert torch.equal(torch.cat([b[0] for b in first]), torch.cat([b[0] for b in halves]))


def test_loader_resumes_from_the_loaded_offset(data: DataConfig) -> None:
    full = train_batches(module(data))
    dm = module(data)
    assert dm.state_dict() == {"consumed_batches": 0}
    dm.load_state_dict({"consumed_batches": 4})
    assert dm.state_dict() == {"consumed_batches": 4}
    loader = dm.train_dataloader()
    assert len(loader) == 6  # the epoch still counts the 4 consumed batches (Lightning's resume model)
    rest = list(loader)
    assert len(rest) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(rest, full[4:], strict=True))


def test_validation_windows_are_fixed_consecutive_and_identical(data: DataConfig) -> None:
    one, two = module(data, val_max_windows=0), module(data, seed=99, val_max_windows=0)
    loaders = one.val_dataloader()
    assert isinstance(loaders, list) and len(loaders) == 2
    held = one.val_streams["held"]
    windows = torch.cat([x for x, _ in loaders[0]])
    assert len(windows) == (len(held) - 1) // T
    for k, row in enumerate(windows):  # window k is tokens [kT, kT + T): consecutive, no overlap
        assert row.tolist() == held[k * T : (k + 1) * T].tolist()
    for a, b in zip(loaders, two.val_dataloader(), strict=True):
        assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))


def test_validation_cap_strides_evenly(data: DataConfig) -> None:
    assert val_window_starts(101, 10, 0).tolist() == list(range(0, 100, 10))
    assert val_window_starts(101, 10, 4).tolist() == [0, 20, 50, 70]
    assert val_window_starts(101, 10, 50).tolist() == list(range(0, 100, 10))
    dm = module(data, val_max_windows=3)
    assert [sum(len(x) for x, _ in loader) for loader in dm.val_dataloader()] == [3, 3]
    assert module(data).val_max_windows == data.val_max_windows  # None defers to the config


def test_validation_set_smaller_than_a_window(data: DataConfig, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("too short")  # 9 bytes + EOS = 10 tokens
    small = DataConfig(corpus=data.corpus, val_sets=(f"tiny={tiny}",), tokenizer="byte")
    message = "validation set 'tiny' has 10 tokens, fewer than one window of 17 tokens (seq_len=16 + 1)"
    with pytest.raises(DataError, match=re.escape(message)):
        module(small)


def test_training_corpus_smaller_than_a_window(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("tiny")
    data = DataConfig(corpus=(str(tmp_path / "t.txt"),), val_sets=("pydoc",), tokenizer="byte")
    with pytest.raises(DataError, match="has 5 tokens, fewer than one window of 17"):
        module(data)


def test_bad_constructor_arguments(data: DataConfig) -> None:
    for kwargs, message in [({"seq_len": 0}, "seq_len=0"), ({"seed": -1}, "seed=-1"),
                            ({"val_max_windows": -2}, "val_max_windows=-2")]:
        with pytest.raises(ValueError, match=message):
            MHMoEDataModule(data, **({"seq_len": T, "batch_size": B, "seed": 0, "max_steps": 3} | kwargs))


def test_val_stream_matches_the_module(data: DataConfig) -> None:
    dm = module(data)
    assert val_stream(data, "held").tolist() == dm.val_streams["held"].tolist()
    with pytest.raises(DataError, match="no validation set 'wiki'"):
        val_stream(data, "wiki")


def test_default_config_end_to_end() -> None:
    """The default run: Shakespeare, byte-level BPE 4096, validation on held-out plays and pydoc."""
    dm = MHMoEDataModule(DataConfig(), seq_len=64, batch_size=4, seed=0, max_steps=3)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.val_names == ["shakespeare", "pydoc"]
    assert dm.vocab_size == 4096 and dm.train_stream.dtype == np.uint16
    assert len(dm.train_stream) > 1_000_000
    inputs, targets = next(iter(dm.train_dataloader()))
    assert inputs.shape == (4, 64) and int(inputs.max()) < 4096
    assert [len(loader) for loader in dm.val_dataloader()] == [16, 16]  # 64 windows / batch 4
    reloaded = load_tokenizer(dm.tokenizer.spec)
    text = dm.tokenizer.decode(inputs[0].tolist())
    assert reloaded.decode(reloaded.encode(text)) == text
