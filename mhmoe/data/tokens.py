"""Token streams: a source encoded once, documents joined by EOS, kept as a flat memory-mapped array.

Cached as ``home/tokens/<hash>-<dtype>.bin`` (raw little-endian ids, uint16 when the vocabulary fits,
else uint32); the hash covers the source content and the exact tokenizer. The file is written under a
temporary name and renamed into place, so a crash never leaves a truncated cache behind.

A file source is prepared in parts (:class:`mhmoe.data.sources.Part`: one per file, JSON Lines cut every
``CHUNK_BYTES``), each tokenized into its own shard ``<stream>.parts/<index>.bin`` (atomically, by a pool of
processes when ``workers`` > 1); a killed preparer keeps its finished shards and the next one tokenizes
only the rest. The shards are then joined, in order, into the stream file, so the token order is the
sequential one. A file lock beside the stream makes a second preparer (another worker, a training run)
wait for the first and then use its stream.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mhmoe.config.data import DataConfig, DataError
from mhmoe.data.cachelock import cache_lock
from mhmoe.data.sources import Part, Source, val_source
from mhmoe.data.tokenizer import TextTokenizer, build_tokenizer, load_tokenizer
from mhmoe.store.atomic import atomic_write, remove_stale_temp_files
from mhmoe.store.home import home_path

STREAM_VERSION = "v1"
"""Part of the cache key: change it whenever the stream layout changes."""
COPY_TOKENS = 1 << 24
"""Ids copied (and checked) at a time from a pre-tokenized file."""
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


def _write_documents(documents: Iterable[str], tokenizer: TextTokenizer, path: Path) -> int:
    """Tokenize ``documents`` into ``path`` (atomically), each followed by EOS; returns the token count."""
    dtype = stream_dtype(tokenizer.vocab_size)
    eos = np.array([tokenizer.eos_id], dtype=dtype)
    count = 0
    with atomic_write(path, "wb") as f:
        for batch in _batches(documents):
            for ids in tokenizer.encode_batch(batch):
                ids.astype(dtype, copy=False).tofile(f)
                eos.tofile(f)  # after every document: the model learns where texts end
                count += len(ids) + 1
    return count


def pretokenized_ids(part: Part, vocab_size: int) -> np.ndarray:
    """Memory map of a pre-tokenized file's ids: ``.npy`` (1-D uint16/uint32) or raw ``.bin``."""
    path = Path(part.path)
    if path.suffix == ".npy":
        try:
            ids = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: not a readable .npy file ({err})") from None
        if ids.ndim != 1 or ids.dtype not in (np.uint16, np.uint32):
            raise DataError(f"{path}: holds a {ids.ndim}-D {ids.dtype} array; expected 1-D uint16 or uint32 ids")
        return ids
    dtype = stream_dtype(vocab_size) if part.token_dtype == "auto" else np.dtype(part.token_dtype)
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise DataError(f"{path}: {size} bytes is not a whole number of {dtype.name} ids; set data.token_dtype")
    return np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype)


def _copy_ids(part: Part, tokenizer: TextTokenizer, path: Path) -> int:
    """A pre-tokenized file's ids into a shard, each checked against the tokenizer's vocabulary."""
    ids = pretokenized_ids(part, tokenizer.vocab_size)
    dtype = stream_dtype(tokenizer.vocab_size)
    with atomic_write(path, "wb") as f:
        for start in range(0, len(ids), COPY_TOKENS):
            block = ids[start : start + COPY_TOKENS]
            top = int(block.max())
            if top >= tokenizer.vocab_size:
                raise DataError(f"{part.path}: holds id {top}, outside the {tokenizer.vocab_size}-id vocabulary of "
                                f"data.tokenizer={tokenizer.spec!r}; name the tokenizer that made the file "
                                "(or set data.token_dtype)")
            block.astype(dtype, copy=False).tofile(f)
    return len(ids)


def _write_part(part: Part, tokenizer: TextTokenizer, path: Path) -> int:
    if part.pretokenized:
        return _copy_ids(part, tokenizer, path)
    return _write_documents(part.documents(), tokenizer, path)


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare_stream` did: the stream, its tokens and how many shards it tokenized or reused."""

    path: Path
    tokens: int
    tokenized: int
    """Shards tokenized by this call (0: the stream was already there)."""
    reused: int
    """Shards a killed earlier preparer had finished."""


_worker_tokenizers: dict[str, TextTokenizer] = {}


def _tokenize_part(job: tuple[Part, str, str]) -> int:
    """Pool worker: one part into its shard. Loads the tokenizer once per process."""
    part, tokenizer_spec, shard = job
    if tokenizer_spec not in _worker_tokenizers:
        _worker_tokenizers[tokenizer_spec] = load_tokenizer(tokenizer_spec)
    return _write_part(part, _worker_tokenizers[tokenizer_spec], Path(shard))


def _single_threaded_worker() -> None:
    # One process per core already: tokenizers' own thread pool in each would only oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _tokenize_shards(parts: list[Part], tokenizer: TextTokenizer, shards: list[Path], workers: int) -> int:
    """Tokenize the parts whose shard is missing; returns how many it tokenized."""
    todo = [i for i, shard in enumerate(shards) if not shard.is_file()]
    if workers > 1 and len(todo) > 1:
        jobs = [(parts[i], tokenizer.spec, str(shards[i])) for i in todo]
        # spawn: the caller may hold torch's or tokenizers' threads, which a forked child would inherit broken.
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(workers, len(todo)), initializer=_single_threaded_worker) as pool:
            for _ in pool.imap_unordered(_tokenize_part, jobs):
                pass
    else:
        for i in todo:
            _write_part(parts[i], tokenizer, shards[i])
    return len(todo)


def _check_each_source_has_text(parts: list[Part], shards: list[Path]) -> None:
    """Every document ends in EOS (and a token file holds ids), so a source whose shards are all empty
    holds no text."""
    sizes: dict[str, int] = {}
    for part, shard in zip(parts, shards, strict=True):
        sizes[part.spec] = sizes.get(part.spec, 0) + shard.stat().st_size
    for spec, size in sizes.items():
        if size == 0:
            raise DataError(f"data source {spec!r} holds no text (empty corpus)")


def _join(shards: list[Path], path: Path) -> None:
    with atomic_write(path, "wb") as out:
        for shard in shards:
            with open(shard, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 24)


def _prepare_in_parts(parts: list[Part], tokenizer: TextTokenizer, path: Path, workers: int) -> tuple[int, int]:
    """(shards tokenized, shards reused) after writing ``path`` from shards in ``<path>.parts``."""
    folder = path.with_name(path.name + ".parts")
    remove_stale_temp_files(folder)  # we hold the lock: a temp file here is a killed preparer's
    shards = [folder / f"{i:06d}.bin" for i in range(len(parts))]
    try:
        tokenized = _tokenize_shards(parts, tokenizer, shards, workers)
        _check_each_source_has_text(parts, shards)
    except DataError:  # the data must change, and with it the cache key: these shards are no use
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _join(shards, path)
    shutil.rmtree(folder, ignore_errors=True)
    return tokenized, len(parts) - tokenized


def prepare_stream(source: Source, tokenizer: TextTokenizer, *, workers: int = 1) -> Prepared:
    """Build the source's token stream unless it exists, waiting for a preparer already at it."""
    path = stream_path(source, tokenizer)
    if path.is_file():
        return Prepared(path, path.stat().st_size // stream_dtype(tokenizer.vocab_size).itemsize, 0, 0)
    with cache_lock(path.with_name(path.name + ".lock")):
        if path.is_file():  # the preparer we waited for built it
            return Prepared(path, path.stat().st_size // stream_dtype(tokenizer.vocab_size).itemsize, 0, 0)
        if source.parts is None:
            tokens = _write_documents(source.documents(), tokenizer, path)
            return Prepared(path, tokens, 1, 0)
        tokenized, reused = _prepare_in_parts(source.parts(), tokenizer, path, workers)
        return Prepared(path, path.stat().st_size // stream_dtype(tokenizer.vocab_size).itemsize, tokenized, reused)


def token_stream(source: Source, tokenizer: TextTokenizer, *, workers: int = 1) -> np.memmap:
    """Read-only memory map of the source's tokens, built on first use."""
    path = prepare_stream(source, tokenizer, workers=workers).path
    return np.memmap(path, dtype=stream_dtype(tokenizer.vocab_size), mode="r")


def val_stream(data: DataConfig, name: str, tokenizer: TextTokenizer | None = None) -> np.memmap:
    """Token stream of one named validation set (built with the run's tokenizer unless one is given)."""
    source = val_source(data, name)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(data)
    return token_stream(source, tokenizer)
