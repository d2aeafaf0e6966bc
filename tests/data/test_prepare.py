"""Corpus preparation in parts: shards tokenized in parallel and joined in the sequential order, a killed
preparer resumed, and concurrent preparers serialized by the cache lock (real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from mhmoe.config.data import DataError
from mhmoe.data import sources
from mhmoe.data.sources import open_source
from mhmoe.data.tokenizer import ByteTokenizer
from mhmoe.data.tokens import prepare_stream, stream_path, token_stream

REPO = Path(__file__).resolve().parents[2]


def write_corpus(folder: Path, files: int, documents: int) -> list[str]:
    """``files`` JSON Lines files of ``documents`` records each; returns every text in corpus order."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for f in range(files):
        batch = [f"file {f} document {d} " + "word " * (d % 7) for d in range(documents)]
        (folder / f"part{f}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in batch))
        texts += batch
    return texts


def expected_bytes(texts: list[str]) -> list[int]:
    return [i for t in texts for i in [*t.encode(), 256]]


def test_parts_cover_the_file_at_line_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = write_corpus(tmp_path / "c", files=1, documents=200)
    monkeypatch.setattr(sources, "CHUNK_BYTES", 500)
    parts = open_source(str(tmp_path / "c")).parts()
    assert len(parts) > 5
    assert [t for p in parts for t in p.documents()] == texts


def test_parallel_shards_join_in_the_sequential_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = write_corpus(tmp_path / "c", files=3, documents=300)
    monkeypatch.setattr(sources, "CHUNK_BYTES", 4000)  # several parts per file, planned here, read by workers
    source = open_source(str(tmp_path / "c"))
    done = prepare_stream(source, ByteTokenizer(), workers=2)
    assert done.tokenized == len(source.parts()) > 3 and done.reused == 0
    assert np.fromfile(done.path, dtype=np.uint16).tolist() == expected_bytes(texts)
    assert not done.path.with_name(done.path.name + ".parts").exists()  # shards go once joined


class StopsAfter(ByteTokenizer):
    """The byte tokenizer, interrupted (as by Ctrl-C) once it has encoded ``calls`` batches."""

    def __init__(self, calls: int) -> None:
        self.calls = calls

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt
        return super().encode_batch(texts)


def test_an_interrupted_preparer_is_resumed(tmp_path: Path) -> None:
    texts = write_corpus(tmp_path / "c", files=4, documents=50)
    source = open_source(str(tmp_path / "c"))
    with pytest.raises(KeyboardInterrupt):
        prepare_stream(source, StopsAfter(2), workers=1)
    path = stream_path(source, ByteTokenizer())
    shards = path.with_name(path.name + ".parts")
    assert not path.exists() and len(list(shards.glob("*.bin"))) == 2
    (shards / ".000003.bin.abcdefgh.tmp").write_bytes(b"half")  # what a SIGKILL mid-write leaves
    done = prepare_stream(source, ByteTokenizer(), workers=1)
    assert (done.tokenized, done.reused) == (2, 2)
    assert token_stream(source, ByteTokenizer()).tolist() == expected_bytes(texts)
    assert not shards.exists()


def test_two_preparers_started_at_once_write_the_cache_once(tmp_path: Path, home_dir: Path) -> None:
    write_corpus(tmp_path / "c", files=4, documents=4000)
    home = tmp_path / "home"
    command = [sys.executable, "-m", "mhmoe.cli", "data", "prepare", "--preset", "debug", "--workers", "1",
               f"data.corpus={tmp_path / 'c'}", "data.val_sets=[]", "data.vocab_size=300"]
    env = {**os.environ, "MHMOE_HOME": str(home), "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    corpus_lines = [line for out, _ in outs for line in out.splitlines() if line.startswith("corpus:")]
    assert len(corpus_lines) == 2
    assert sum("tokenized 4 shard(s)" in line for line in corpus_lines) == 1, corpus_lines
    assert sum("already prepared" in line for line in corpus_lines) == 1, corpus_lines
    assert len(list((home / "tokenizers").glob("*/tokenizer.json"))) == 1


def test_pretokenized_files_are_the_stream(tmp_path: Path) -> None:
    from mhmoe.config.data import DataConfig
    from mhmoe.data.sources import train_source

    folder = tmp_path / "ids"
    folder.mkdir()
    np.array([1, 2, 256, 3], dtype=np.uint16).tofile(folder / "a.bin")  # nanoGPT-style raw uint16
    np.save(folder / "b.npy", np.array([4, 5, 256], dtype=np.uint32))
    data = DataConfig(corpus=(str(folder),), val_sets=(), tokenizer="byte")
    assert token_stream(train_source(data), ByteTokenizer()).tolist() == [1, 2, 256, 3, 4, 5, 256]
    # The same bytes read as uint32 are other ids: another cache entry, and here ids outside the vocabulary.
    as_uint32 = DataConfig(corpus=(str(folder / "a.bin"),), val_sets=(), tokenizer="byte", token_dtype="uint32")
    with pytest.raises(DataError, match=r"a.bin: holds id \d+, outside the 257-id vocabulary"):
        token_stream(train_source(as_uint32), ByteTokenizer())
    path = stream_path(train_source(as_uint32), ByteTokenizer())
    assert not path.exists() and not path.with_name(path.name + ".parts").exists()


def test_pretokenized_corpus_needs_its_tokenizer(tmp_path: Path) -> None:
    from mhmoe.config.base import ConfigError
    from mhmoe.config.data import DataConfig
    from mhmoe.data.sources import check_local_paths

    with pytest.raises(ConfigError, match=r"data.corpus\[0\]='ids.npy' is pre-tokenized: set data.tokenizer"):
        DataConfig(corpus=("ids.npy",), val_sets=())
    (tmp_path / "ids").mkdir()
    np.save(tmp_path / "ids" / "a.npy", np.array([1], dtype=np.uint16))
    with pytest.raises(DataError, match="holds pre-tokenized files: set data.tokenizer"):
        check_local_paths(DataConfig(corpus=(str(tmp_path / "ids"),), val_sets=()))


def test_weighted_mixture_draws_windows_in_proportion(tmp_path: Path) -> None:
    from mhmoe.config.data import CorpusEntry, DataConfig
    from mhmoe.data.datamodule import MHMoEDataModule

    (tmp_path / "small.txt").write_text("a" * 2_000)
    (tmp_path / "large.txt").write_text("b" * 20_000)
    small, large = str(tmp_path / "small.txt"), str(tmp_path / "large.txt")

    def share_of_small(data: DataConfig) -> float:
        dm = MHMoEDataModule(data, seq_len=8, batch_size=64, seed=3, max_steps=20)
        dm.setup()
        windows = [row for step in range(20) for row in dm.train_dataloader().dataset[step][0].tolist()]
        return sum(97 in row for row in windows) / len(windows)

    concatenated = DataConfig(corpus=(small, large), val_sets=(), tokenizer="byte")
    assert share_of_small(concatenated) < 0.15  # by position: about 2k of 22k tokens
    mixture = DataConfig(corpus=({"path": small, "weight": 3}, {"path": large, "weight": 1}), val_sets=(),
                         tokenizer="byte")
    assert mixture.corpus[0] == CorpusEntry(path=small, weight=3.0)
    assert 0.70 < share_of_small(mixture) < 0.80  # by weight: 3 of 4
    assert share_of_small(mixture) == share_of_small(mixture)  # a pure function of the seed
