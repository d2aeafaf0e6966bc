"""data.holdout_fraction: the holdout validation set is cut from the training corpus, disjoint from what
is trained on, and a fraction of 0 leaves the corpus (and every cache keyed on it) exactly as before."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from mhmoe.config.base import ConfigError, from_dict
from mhmoe.config.data import DataConfig, DataError
from mhmoe.config.run import RunConfig, resolve_run_config
from mhmoe.data.datamodule import MHMoEDataModule
from mhmoe.data.sources import check_local_paths, holdout_source, open_source, train_source, val_sources, val_texts
from mhmoe.data.tokenizer import ByteTokenizer, bpe_cache_path
from mhmoe.data.tokens import stream_path, val_stream


def corpus(path: Path, n: int) -> Path:
    """``n`` distinct one-line documents as JSON Lines."""
    path.write_text("".join(json.dumps({"text": f"document {i}: the quick brown fox, take {i}."}) + "\n"
                            for i in range(n)), encoding="utf-8")
    return path


def config(*specs: Path, fraction: float, val_sets: tuple[str, ...] = ("pydoc",)) -> DataConfig:
    return DataConfig(corpus=tuple(str(s) for s in specs), val_sets=val_sets, tokenizer="byte",
                      holdout_fraction=fraction)


def documents(data: DataConfig) -> tuple[list[str], list[str]]:
    return list(train_source(data).documents()), list(holdout_source(data).documents())


def test_holdout_and_training_documents_partition_the_corpus(tmp_path: Path) -> None:
    first, second = corpus(tmp_path / "a.jsonl", 23), tmp_path / "b.txt"
    second.write_text("a whole file is one document\n", encoding="utf-8")
    everything = list(train_source(config(first, second, fraction=0.0)).documents())
    kept, held = documents(config(first, second, fraction=0.25))
    assert not set(kept) & set(held)
    assert sorted(kept + held) == sorted(everything)
    # Evenly strided over the whole corpus in order: the second source's document is index 23.
    assert held == [everything[i] for i in (3, 7, 11, 15, 19, 23)]
    assert kept == [d for d in everything if d not in held]  # order kept on both sides


@pytest.mark.parametrize(("n", "fraction"), [(10, 0.2), (100, 0.29), (37, 0.1), (5, 0.49), (64, 0.125)])
def test_held_out_count_follows_the_rule(tmp_path: Path, n: int, fraction: float) -> None:
    kept, held = documents(config(corpus(tmp_path / "c.jsonl", n), fraction=fraction))
    # Document i is held out iff floor((i+1) f) > floor(i f), with f as written (exact decimal).
    scaled = round(fraction * 1000)
    expected = [i for i in range(n) if (i + 1) * scaled // 1000 > i * scaled // 1000]
    assert held == [f"document {i}: the quick brown fox, take {i}." for i in expected]
    assert len(held) == n * scaled // 1000 and len(kept) == n - len(held)


def test_zero_fraction_leaves_the_training_source_unchanged(tmp_path: Path) -> None:
    first, second = corpus(tmp_path / "a.jsonl", 7), tmp_path / "b.txt"
    second.write_text("tail\n", encoding="utf-8")
    data = config(first, second, fraction=0.0)
    source = train_source(data)

    def digest(parts: list[str]) -> str:  # the fingerprint layout caches were keyed on before the holdout
        h = hashlib.sha256()
        for part in parts:
            h.update(len(part.encode()).to_bytes(8, "little") + part.encode())
        return h.hexdigest()

    def file_fp(path: Path) -> str:
        return digest(["text", path.suffix, hashlib.sha256(path.read_bytes()).hexdigest()])

    assert source.fingerprint == digest(["concat", file_fp(first), file_fp(second)])
    assert list(source.documents()) == [*open_source(str(first)).documents(), "tail\n"]


def test_fraction_keys_every_cache(tmp_path: Path) -> None:
    path = corpus(tmp_path / "c.jsonl", 20)
    fingerprints = {f: train_source(config(path, fraction=f)).fingerprint for f in (0.0, 0.1, 0.2)}
    assert len(set(fingerprints.values())) == 3
    held = holdout_source(config(path, fraction=0.2)).fingerprint
    assert held not in fingerprints.values()
    bpe = DataConfig(corpus=(str(path),), val_sets=(), holdout_fraction=0.2)
    assert bpe_cache_path(bpe, train_source(bpe)) != bpe_cache_path(bpe, open_source(str(path)))
    byte = ByteTokenizer()
    assert stream_path(train_source(bpe), byte) != stream_path(open_source(str(path)), byte)


def test_holdout_without_a_fraction_is_a_config_error(tmp_path: Path) -> None:
    for val_sets in (("pydoc", "holdout"), ("tune=holdout",)):
        with pytest.raises(ConfigError, match=r"data\.val_sets\[\d\]=.* needs data\.holdout_fraction > 0"):
            DataConfig(val_sets=val_sets)


@pytest.mark.parametrize("fraction", [-0.1, 0.5, 0.9, 1.0, float("nan")])
def test_fraction_outside_the_range_is_a_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"data\.holdout_fraction=.* must be in \[0, 0\.5\)"):
        DataConfig(holdout_fraction=fraction)


def test_holdout_is_never_a_training_source() -> None:
    with pytest.raises(ConfigError, match=r"data\.corpus\[1\]='holdout'"):
        DataConfig(corpus=("shakespeare", "holdout"), holdout_fraction=0.1)
    with pytest.raises(DataError, match="holdout_source"):
        open_source("holdout")


def test_cli_value_and_names(tmp_path: Path) -> None:
    path = corpus(tmp_path / "c.jsonl", 20)
    data = from_dict(DataConfig, {"corpus": str(path), "val_sets": "holdout,pydoc", "holdout_fraction": "0.1"})
    assert data.holdout_fraction == 0.1 and data.val_specs() == {"holdout": "holdout", "pydoc": "pydoc"}
    check_local_paths(data)  # holdout is not a path
    check_local_paths(config(path, fraction=0.1, val_sets=("tune=holdout",)))
    sources = val_sources(data)
    assert list(sources) == ["holdout", "pydoc"]
    assert sources["holdout"].fingerprint == holdout_source(data).fingerprint
    assert val_texts(data)["holdout"] == "\n\n".join(holdout_source(data).documents())


def test_empty_holdout_names_the_fraction(tmp_path: Path) -> None:
    data = config(corpus(tmp_path / "few.jsonl", 3), fraction=0.2, val_sets=("holdout",))
    assert len(list(train_source(data).documents())) == 3
    with pytest.raises(DataError, match=re.escape("data.holdout_fraction=0.2 holds out none of the 3 documents")):
        list(val_sources(data)["holdout"].documents())


def test_hash_is_unchanged_unless_the_fraction_is_set() -> None:
    base = resolve_run_config("debug")
    older = base.to_dict()
    del older["data"]["holdout_fraction"]  # what a run config written before the holdout records
    assert RunConfig.from_dict(older).config_hash() == base.config_hash()
    assert resolve_run_config("debug", None, {"data.holdout_fraction": 0.1}).config_hash() != base.config_hash()


def test_data_module_serves_the_holdout(tmp_path: Path) -> None:
    data = config(corpus(tmp_path / "c.jsonl", 50), fraction=0.2, val_sets=("holdout",))
    dm = MHMoEDataModule(data, seq_len=8, batch_size=2, seed=0, max_steps=2, val_max_windows=0)
    dm.setup("fit")
    assert dm.val_names == ["holdout"]
    (loader,) = dm.val_dataloader()
    stream = dm.val_streams["holdout"]
    inputs = [x for x, _ in loader]
    assert sum(len(x) for x in inputs) == (len(stream) - 1) // 8 > 0
    assert inputs[0][0].tolist() == stream[:8].tolist()
    assert val_stream(data, "holdout").tolist() == stream.tolist()
    # The training stream holds only the kept documents: 40 of 50, each followed by EOS.
    kept, held = documents(data)
    assert len(kept) == 40 and len(dm.train_stream) == sum(len(d.encode()) + 1 for d in kept)
    assert len(stream) == sum(len(d.encode()) + 1 for d in held)
