"""Token streams: a source encoded once, documents joined by EOS, kept as a flat memory-mapped array.

Cached as ``home/tokens/<hash>-<dtype>.bin`` (raw little-endian ids, uint16 when the vocabulary fits,
else uint32); the hash covers the source content and the exact tokenizer. The file is written under a
temporary name and renamed into place, so a crash never leaves a truncated cache behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from mhmoe.atomic import atomic_write
from mhmoe.data.config import DataConfig
from mhmoe.data.sources import Source, val_source
from mhmoe.data.tokenizer import TextTokenizer, build_tokenizer
from mhmoe.home import home_path

STREAM_VERSION = "v1"
"""Part of the cache key: change it whenever the stream layout changes."""
BATCH_CHARS = 4_000_000
"""Characters handed to one ``encode_batch`` call: bounded memory, still parallel across documents."""


def stream_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab <= 65536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def stream_path(source: Source, tokenizer: TextTokenizer) -> Path:
    dtype = stream_dtype(tokenizer.vocab_size)
    key = hashlib.sha256(
        json.dumps([STREAM_VERSION, source.fingerprint, tokenizer.fingerprint, dtype.name]).encode()
    ).hexdigest()[:24]
    # Only a name: atomic_write creates the folder once the stream is written (bad data creates nothing).
    return home_path() / "tokens" / f"{key}-{dtype.name}.bin"


def _batches(documents: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in documents:
        batch.append(text)
        size += len(text)
        if size >= BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _write_stream(source: Source, tokenizer: TextTokenizer, path: Path) -> None:
    dtype = stream_dtype(tokenizer.vocab_size)
    eos = np.array([tokenizer.eos_id], dtype=dtype)
    created = not path.parent.exists()
    try:
        with atomic_write(path, "wb") as f:
            for batch in _batches(source.documents()):
                for ids in tokenizer.encode_batch(batch):
                    ids.astype(dtype, copy=False).tofile(f)
                    eos.tofile(f)  # after every document: the model learns where texts end
    except BaseException:
        if created:  # a bad data file leaves no empty cache folder behind (rmdir keeps a non-empty one)
            with contextlib.suppress(OSError):
                path.parent.rmdir()
        raise


def token_stream(source: Source, tokenizer: TextTokenizer) -> np.memmap:
    """Read-only memory map of the source's tokens, built on first use."""
    path = stream_path(source, tokenizer)
    if not path.is_file():
        _write_stream(source, tokenizer, path)
    return np.memmap(path, dtype=stream_dtype(tokenizer.vocab_size), mode="r")


def val_stream(data: DataConfig, name: str, tokenizer: TextTokenizer | None = None) -> np.memmap:
    """Token stream of one named validation set (built with the run's tokenizer unless one is given)."""
    source = val_source(data, name)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(data)
    return token_stream(source, tokenizer)
