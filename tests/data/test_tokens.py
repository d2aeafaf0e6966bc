from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mhmoe.config.data import DataError
from mhmoe.data.sources import Source, open_source
from mhmoe.data.tokenizer import ByteTokenizer, load_tokenizer, train_bpe
from mhmoe.data.tokens import stream_dtype, stream_path, token_stream


def source_of(tmp_path: Path, *documents: str) -> Source:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(f'{{"text": "{d}"}}\n' for d in documents))
    return open_source(str(path))


def test_dtype_choice() -> None:
    assert stream_dtype(257) == np.uint16
    assert stream_dtype(65536) == np.uint16  # ids 0..65535 fit
    assert stream_dtype(65537) == np.uint32


def test_documents_are_joined_with_eos(tmp_path: Path) -> None:
    stream = token_stream(source_of(tmp_path, "ab", "c"), ByteTokenizer())
    assert isinstance(stream, np.memmap) and stream.dtype == np.uint16
    assert stream.tolist() == [97, 98, 256, 99, 256]


def test_large_vocabulary_uses_uint32(tmp_path: Path) -> None:
    big = train_bpe(["hello world, hello there"], 300)
    big.add_tokens([f"qqz{i:05d}zqq" for i in range(70_000)])  # real tokenizer, vocab > 65536
    big.save(str(tmp_path / "big.json"))
    tok = load_tokenizer(tmp_path / "big.json")
    assert tok.vocab_size > 65536
    stream = token_stream(source_of(tmp_path, "hello qqz69999zqq"), tok)
    assert stream.dtype == np.uint32
    assert stream.tolist() == tok.encode("hello qqz69999zqq") + [tok.eos_id]
    assert max(stream) >= 65536  # would have wrapped in uint16


def test_stream_is_cached(tmp_path: Path, home_dir: Path) -> None:
    source, tok = source_of(tmp_path, "cached text"), ByteTokenizer()
    path = stream_path(source, tok)
    assert path.parent == home_dir / "tokens" and path.name.endswith("-uint16.bin")
    token_stream(source, tok)
    stamp = path.stat().st_mtime_ns
    assert token_stream(source, tok).tolist() == list(b"cached text") + [256]
    assert path.stat().st_mtime_ns == stamp


def test_crash_while_writing_leaves_no_cache(tmp_path: Path, home_dir: Path) -> None:
    def read() -> Iterator[str]:
        yield "first document"
        raise DataError("disk on fire")

    source = Source(spec="crashy", fingerprint="crashy-fingerprint", read=read)
    path = stream_path(source, ByteTokenizer())
    with pytest.raises(DataError, match="disk on fire"):
        token_stream(source, ByteTokenizer())
    assert not path.exists()
    assert not list((home_dir / "tokens").glob("*.tmp"))


def test_empty_source_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "blank.txt").write_text("   \n")
    with pytest.raises(DataError, match="holds no text"):
        token_stream(open_source(str(tmp_path / "blank.txt")), ByteTokenizer())
