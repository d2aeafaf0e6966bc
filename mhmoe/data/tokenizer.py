"""Tokenizers: byte-level BPE trained on the training corpus (cached by content hash), a given
``tokenizer.json``, or plain UTF-8 bytes.

Every tokenizer exposes ``encode``, ``decode``, ``vocab_size``, ``eos_id``, ``path`` (the tokenizer.json,
None for bytes) and ``spec`` (what :func:`load_tokenizer` needs to rebuild it later, e.g. from the path
recorded in a run config). Documents are joined with ``eos_id`` in the token streams.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from mhmoe.config.data import TOKENIZER_KINDS, DataConfig, DataError
from mhmoe.data.cachelock import cache_lock
from mhmoe.data.sources import Source, train_source
from mhmoe.store.home import home_path

EOS_TOKEN = "<|endoftext|>"
# End-of-text names used by common tokenizer.json files, tried in order for a user-given file.
EOS_CANDIDATES = (EOS_TOKEN, "</s>", "<|end_of_text|>", "<eos>")
BPE_RECIPE = "bytelevel-bpe/v1/min_frequency=2"
"""Part of the cache key: change it whenever :func:`train_bpe` changes."""
BPE_SAMPLE_CHARS = 256 * 2**20
"""BPE is trained on at most about this many characters of the corpus (part of the cache key), spread
over its parts (:func:`bpe_sample`), so a multi-GB corpus trains in bounded time and memory; a corpus
this small or smaller is used whole."""


class TextTokenizer(Protocol):
    """What the data module, the model and the lm-eval adapter rely on."""

    vocab_size: int
    eos_id: int
    path: Path | None
    spec: str
    fingerprint: str

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0-255 and end-of-text as 256: needs no training, never unknown."""

    vocab_size = 257
    eos_id = 256
    path: Path | None = None  # TextTokenizer's type: no file behind byte tokens
    spec = "byte"
    fingerprint = "byte/v1"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.frombuffer(text.encode("utf-8"), dtype=np.uint8) for text in texts]

    def decode(self, ids: Iterable[int]) -> str:
        # A window may cut a multi-byte character: replace rather than fail.
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


class BPETokenizer:
    """A Hugging Face ``tokenizers`` tokenizer loaded from a tokenizer.json."""

    def __init__(self, path: Path) -> None:
        try:
            raw = path.read_bytes()
            self._tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
        except Exception as err:  # OSError, UnicodeDecodeError, or the bare Exception tokenizers raises
            raise DataError(f"cannot load tokenizer {path}: {err}") from None
        # Text that happens to contain "<|endoftext|>" is text; only we insert the real EOS.
        self._tokenizer.encode_special_tokens = True
        eos = next((i for t in EOS_CANDIDATES if (i := self._tokenizer.token_to_id(t)) is not None), None)
        if eos is None:
            raise DataError(f"tokenizer {path} has no end-of-text token (looked for {list(EOS_CANDIDATES)})")
        self.eos_id: int = eos
        self.vocab_size: int = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self.path: Path | None = path
        self.spec = str(path)
        # Hash of the bytes actually loaded, so the token cache matches this exact tokenizer.
        self.fingerprint = hashlib.sha256(raw).hexdigest()

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encodings = self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def train_bpe(documents: Iterable[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2 pre-tokenization, lossless decode) with ``<|endoftext|>`` as id 0."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer=trainer)
    return tokenizer


def _first_chars(documents: Iterable[str], budget: int) -> Iterator[str]:
    """Documents until ``budget`` characters are used (at least one, so no source is skipped)."""
    used = 0
    for text in documents:
        if used >= budget:
            return
        used += len(text)
        yield text


def bpe_sample(train: Source) -> Iterator[str]:
    """The documents BPE is trained on: the whole corpus up to :data:`BPE_SAMPLE_CHARS`, else the first
    documents of every part (file, or JSON Lines piece) in equal shares, so every file is represented."""
    parts = train.parts() if train.parts is not None else None
    if parts is None:
        yield from _first_chars(train.documents(), BPE_SAMPLE_CHARS)
        return
    sizes = [(part.end if part.end is not None else Path(part.path).stat().st_size) - part.start for part in parts]
    whole = sum(sizes) <= BPE_SAMPLE_CHARS  # bytes >= characters: the cap cannot bite
    share = BPE_SAMPLE_CHARS if whole else max(1, BPE_SAMPLE_CHARS // len(parts))
    with_text: set[str] = set()
    for part in parts:
        for text in _first_chars(part.documents(), share):
            with_text.add(part.spec)
            yield text
    for spec in dict.fromkeys(part.spec for part in parts):
        if spec not in with_text:  # before a tokenizer is published: an empty source creates nothing
            raise DataError(f"data source {spec!r} holds no text (empty corpus)")


def _publish(tokenizer: Tokenizer, path: Path) -> None:
    """Write next to ``path`` and link it in: the first writer wins, readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tokenizer.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        tokenizer.save(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared home must stay readable
        try:
            os.link(tmp, path)  # fails if another process published first: keep theirs
        except FileExistsError:
            pass
        except OSError:  # filesystems without hard links
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def bpe_cache_path(data: DataConfig, train: Source) -> Path:
    """``home/tokenizers/<hash>/tokenizer.json`` for this corpus content and BPE settings."""
    key = hashlib.sha256(
        json.dumps({"recipe": BPE_RECIPE, "vocab_size": data.vocab_size, "corpus": train.fingerprint,
                    "sample_chars": BPE_SAMPLE_CHARS}).encode()
    ).hexdigest()[:16]
    return home_path() / "tokenizers" / key / "tokenizer.json"  # created by _publish, after training


def build_tokenizer(data: DataConfig, train: Source | None = None) -> TextTokenizer:
    """The tokenizer ``data.tokenizer`` asks for, training (once per corpus content) when it is ``bpe``."""
    if data.tokenizer != "bpe":
        return load_tokenizer(data.tokenizer)
    train = train if train is not None else train_source(data)
    path = bpe_cache_path(data, train)
    if not path.is_file():
        with cache_lock(path.parent.with_suffix(".lock")):  # other workers wait instead of training too
            if not path.is_file():
                _publish(train_bpe(bpe_sample(train), data.vocab_size), path)
    return BPETokenizer(path)


def check_tokenizer_file(data: DataConfig) -> None:
    """Load the tokenizer.json that ``data.tokenizer`` names (nothing for bpe/byte), before anything is
    created: a file that is not a tokenizer is a DataError naming the field, not a failure after start-up."""
    if data.tokenizer in TOKENIZER_KINDS:
        return
    try:
        load_tokenizer(data.tokenizer)
    except DataError as err:
        raise DataError(f"data.tokenizer={data.tokenizer!r}: {str(err).strip().splitlines()[0]}") from None


def load_tokenizer(spec_or_path: str | Path) -> TextTokenizer:
    """Rebuild a tokenizer from its ``spec``: ``"byte"`` or a tokenizer.json path (or its folder)."""
    if spec_or_path == "byte":
        return ByteTokenizer()
    if spec_or_path == "bpe":
        raise DataError("load_tokenizer('bpe') needs the corpus: use build_tokenizer(DataConfig) "
                        "or pass the tokenizer.json path it produced")
    path = Path(spec_or_path).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"tokenizer file {path} does not exist")
    return BPETokenizer(path)
