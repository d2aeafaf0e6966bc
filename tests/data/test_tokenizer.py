from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from mhmoe.config.data import DataConfig, DataError
from mhmoe.data.tokenizer import BPETokenizer, ByteTokenizer, build_tokenizer, load_tokenizer

TEXT = "Wherefore art thou Romeo? Façade, naïve, 🦀 — and tabs\tand\r\nnewlines.\n"


@pytest.fixture()
def corpus(tmp_path: Path) -> DataConfig:
    path = tmp_path / "corpus.txt"
    path.write_text("To be, or not to be, that is the question:\n" * 50 + "Whether 'tis nobler in the mind\n" * 30)
    return DataConfig(corpus=(str(path),), val_sets=("pydoc",), vocab_size=300)


def test_byte_tokenizer_round_trip() -> None:
    tok = load_tokenizer("byte")
    assert isinstance(tok, ByteTokenizer)
    assert (tok.vocab_size, tok.eos_id, tok.path, tok.spec) == (257, 256, None, "byte")
    ids = tok.encode(TEXT)
    assert max(ids) < 256 and tok.decode(ids) == TEXT
    assert tok.decode(ids + [tok.eos_id]) == TEXT  # EOS is not text


def test_bpe_trains_once_and_round_trips(corpus: DataConfig, home_dir: Path) -> None:
    tok = build_tokenizer(corpus)
    assert isinstance(tok, BPETokenizer)
    assert tok.path is not None and tok.path.parent.parent == home_dir / "tokenizers"
    assert tok.path.name == "tokenizer.json"
    assert 257 < tok.vocab_size <= 300 and tok.eos_id == 0
    ids = tok.encode(TEXT)  # byte-level: text the corpus never saw still round-trips
    assert tok.decode(ids) == TEXT
    assert len(tok.encode("To be, or not to be")) < len("To be, or not to be")  # merges learned
    assert tok.eos_id not in tok.encode("a literal <|endoftext|> in text")

    stamp = tok.path.stat().st_mtime_ns
    again = build_tokenizer(corpus)
    assert again.path == tok.path and tok.path.stat().st_mtime_ns == stamp  # cache hit: not retrained
    assert [p.name for p in tok.path.parent.iterdir()] == ["tokenizer.json"]  # no temp files left


def test_cache_key_follows_content_and_settings(corpus: DataConfig, tmp_path: Path) -> None:
    base = build_tokenizer(corpus).path
    bigger = build_tokenizer(DataConfig(corpus=corpus.corpus, val_sets=("pydoc",), vocab_size=320)).path
    Path(corpus.corpus[0]).write_text("Something else entirely, said twice. " * 40)
    changed = build_tokenizer(corpus).path
    assert len({base, bigger, changed}) == 3


def test_load_tokenizer_reloads_what_was_saved(corpus: DataConfig) -> None:
    tok = build_tokenizer(corpus)
    for spec in (tok.spec, tok.path, tok.path.parent):
        reloaded = load_tokenizer(spec)
        assert reloaded.encode(TEXT) == tok.encode(TEXT)
        assert (reloaded.vocab_size, reloaded.eos_id) == (tok.vocab_size, tok.eos_id)
        assert reloaded.fingerprint == tok.fingerprint
    given = build_tokenizer(DataConfig(tokenizer=str(tok.path), val_sets=("pydoc",)))
    assert given.path == tok.path


def test_bad_tokenizer_specs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="tokenizer file .*missing.json does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(DataError, match="needs the corpus"):
        load_tokenizer("bpe")
    no_eos = Tokenizer(models.BPE())
    no_eos.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    no_eos.train_from_iterator(["abc abc"], trainers.BpeTrainer(vocab_size=260, show_progress=False))
    no_eos.save(str(tmp_path / "no_eos.json"))
    with pytest.raises(DataError, match="has no end-of-text token"):
        load_tokenizer(tmp_path / "no_eos.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot load tokenizer"):
        load_tokenizer(tmp_path / "broken.json")


def test_bpe_trains_on_a_bounded_sample_of_every_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mhmoe.data import tokenizer as tokenizer_module
    from mhmoe.data.sources import train_source

    for name in ("a", "b"):  # each file: one short document first, then a flood of one word
        docs = [f"{name} first document of the file"] + ["zebra " * 50] * 200
        (tmp_path / f"{name}.jsonl").write_text("".join(f'{{"text": "{d}"}}\n' for d in docs))
    data = DataConfig(corpus=(str(tmp_path),), val_sets=(), vocab_size=300)
    whole = build_tokenizer(data)
    assert len(whole.encode("zebra")) == 1  # trained on everything: the flood is one token
    monkeypatch.setattr(tokenizer_module, "BPE_SAMPLE_CHARS", 40)  # about one document per file
    assert list(tokenizer_module.bpe_sample(train_source(data))) == ["a first document of the file",
                                                                     "b first document of the file"]
    sampled = build_tokenizer(data)
    assert sampled.path != whole.path  # the cap is part of the cache key
    assert len(sampled.encode("zebra")) > 1
