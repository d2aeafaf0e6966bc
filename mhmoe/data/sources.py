"""Readers: a source spec becomes a stream of documents plus a content fingerprint for the caches.

Formats: plain text (one document per file, read strictly as UTF-8), JSON Lines (one document per
record's ``text`` field: the RedPajama format), Parquet (one document per row of a ``text`` column),
folders (every ``.txt``/``.jsonl``/``.parquet`` below, sorted by relative path), Hugging Face datasets
(``hf:NAME[:CONFIG]:SPLIT``) and the built-ins of :mod:`mhmoe.data.shakespeare`. Bad input raises
:class:`DataError` saying which file, line, row or byte offset is wrong. ``data.holdout_fraction`` splits
the training corpus into the documents trained on and the ``holdout`` validation set (:func:`holds_out`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from mhmoe.config.data import (
    BUILTIN_SOURCES,
    HF_SPEC,
    HOLDOUT,
    PYDOC,
    SHAKESPEARE_TRAIN,
    SHAKESPEARE_VAL,
    TOKEN_SUFFIXES,
    DataConfig,
    DataError,
    canonical_source,
)
from mhmoe.data import shakespeare
from mhmoe.store.home import home_subdir

FOLDER_SUFFIXES = (".txt", ".jsonl", ".parquet", *TOKEN_SUFFIXES)
CHUNK_BYTES = 32 * 2**20
"""JSON Lines files are cut into parts of about this many bytes (at line starts), so one large file is
tokenized by several processes; plain-text and Parquet files are one part each."""
DOCUMENT_SEPARATOR = "\n\n"
"""Joins documents in :func:`val_texts` (the token streams join them with the EOS token instead)."""


@dataclass(frozen=True)
class Part:
    """A piece of a file source that a worker process can read on its own: documents in order, so the
    parts of a source, read one after the other, are exactly the source's documents."""

    spec: str
    """The source the part belongs to (every source must hold some text)."""
    path: str
    text_field: str
    start: int = 0
    """First byte (a line start; JSON Lines only)."""
    end: int | None = None
    """Byte after the last line read (None: to the end of the file)."""
    token_dtype: str = "auto"
    """``data.token_dtype``, for a pre-tokenized .bin file."""

    @property
    def pretokenized(self) -> bool:
        return Path(self.path).suffix in TOKEN_SUFFIXES

    def documents(self) -> Iterator[str]:
        """The part's non-blank documents (an empty part is fine; an empty source is not)."""
        path = Path(self.path)
        if self.pretokenized:
            raise DataError(f"{path} is pre-tokenized: it holds token ids, not text")
        texts = (read_jsonl(path, self.text_field, start=self.start, end=self.end) if path.suffix == ".jsonl"
                 else read_file(path, self.text_field))
        return (text for text in texts if text.strip())


@dataclass(frozen=True)
class Source:
    """Documents of one source and a fingerprint that changes whenever their content can."""

    spec: str
    """What the user wrote (used in error messages)."""
    fingerprint: str
    """sha256 hex over the content (files) or the dataset identity (Hugging Face)."""
    read: Callable[[], Iterable[str]]
    """Yields the raw documents; call :meth:`documents` instead."""
    parts: Callable[[], list[Part]] | None = None
    """The same documents as independent file parts (tokenized in parallel); None when the source cannot
    be split (Hugging Face, built-in text, the holdout split)."""

    def documents(self) -> Iterator[str]:
        """Non-blank documents in a fixed order; an empty source is a DataError."""
        count = 0
        for text in self.read():
            if text.strip():
                count += 1
                yield text
        if count == 0:
            raise DataError(f"data source {self.spec!r} holds no text (empty corpus)")


def decode_utf8(data: bytes, where: str, *, offset: int = 0) -> str:
    """Strict UTF-8; the error names ``where`` and the byte offset in the file."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{where}: not valid UTF-8 at byte offset {offset + err.start} ({err.reason}); "
            "convert the file to UTF-8"
        ) from None


def read_text_file(path: Path) -> str:
    """The whole file as one document (a leading byte-order mark is dropped)."""
    return decode_utf8(path.read_bytes(), str(path)).removeprefix("\ufeff")


def read_jsonl(path: Path, text_field: str = "text", *, start: int = 0, end: int | None = None) -> Iterator[str]:
    """One document per JSON Lines record; blank lines are skipped. ``start``/``end``: read only the lines
    starting in that byte range (``start`` must be a line start)."""

    def lineno(index: int) -> int:
        # Counted only for an error message: a part that starts mid-file does not know its first line.
        return index + 1 + (_count_lines(path, start) if start else 0)

    offset = start
    with open(path, "rb") as f:
        f.seek(start)
        for index, raw in enumerate(f):
            if end is not None and offset >= end:
                break
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                decode_utf8(raw, f"{path} (line {lineno(index)})", offset=offset)  # raises, naming the line
            offset += len(raw)
            if index == 0 and start == 0:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno(index)}: not valid JSON ({err.msg}, column {err.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno(index)}: expected a JSON object with a {text_field!r} field, "
                                f"got {type(record).__name__}")
            if text_field not in record:
                raise DataError(f"{path}:{lineno(index)}: record has no {text_field!r} field "
                                f"(fields: {sorted(record)[:10]}); set data.text_field")
            text = record[text_field]
            if not isinstance(text, str):
                raise DataError(f"{path}:{lineno(index)}: field {text_field!r} is {type(text).__name__}, "
                                "not a string")
            yield text


def _count_lines(path: Path, end: int) -> int:
    """Newlines in the first ``end`` bytes of ``path``."""
    count = 0
    with open(path, "rb") as f:
        while end > 0:
            block = f.read(min(end, 1 << 20))
            if not block:
                break
            count += block.count(b"\n")
            end -= len(block)
    return count


def jsonl_parts(spec: str, path: Path, text_field: str) -> list[Part]:
    """``path`` cut into parts of about :data:`CHUNK_BYTES`, each starting at a line start."""
    size = path.stat().st_size
    starts = [0]
    with open(path, "rb") as f:
        while starts[-1] + CHUNK_BYTES < size:
            f.seek(starts[-1] + CHUNK_BYTES - 1)
            f.readline()  # to the start of the next line (byte -1 may itself end a line)
            if f.tell() >= size:
                break
            starts.append(f.tell())
    ends: list[int | None] = [*starts[1:], None]
    return [Part(spec, str(path), text_field, start, end) for start, end in zip(starts, ends, strict=True)]


def read_parquet(path: Path, text_field: str = "text") -> Iterator[str]:
    """One document per row of the ``text_field`` string column."""
    # pyarrow costs ~0.3 s to import; only Parquet users pay it.
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    schema = table.schema_arrow
    if text_field not in schema.names:
        raise DataError(f"{path}: Parquet file has no {text_field!r} column (columns: {schema.names}); "
                        "set data.text_field")
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise DataError(f"{path}: column {text_field!r} has type {kind}, expected string")
    row = 0
    for batch in table.iter_batches(columns=[text_field], batch_size=4096):
        for text in batch.column(0).to_pylist():
            if text is None:
                raise DataError(f"{path}: row {row} of column {text_field!r} is null")
            row += 1
            yield text


def list_files(path: Path, spec: str) -> list[Path]:
    """The file itself, or every supported file under a folder (hidden ones skipped), in a fixed order."""
    if not path.exists():
        raise DataError(f"data source {spec!r}: {path} does not exist")
    if path.is_file():
        return [path]
    files = [
        p for p in path.rglob("*")
        if p.is_file() and p.suffix in FOLDER_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    ]
    if not files:
        raise DataError(f"data source {spec!r}: folder {path} holds no {'/'.join(FOLDER_SUFFIXES)} file")
    return sorted(files, key=lambda p: p.relative_to(path).as_posix())


def read_file(path: Path, text_field: str) -> Iterator[str]:
    """Dispatch on the suffix: .jsonl, .parquet, anything else is plain text (pre-tokenized files hold none)."""
    if path.suffix in TOKEN_SUFFIXES:
        raise DataError(f"{path} is pre-tokenized: it holds token ids, not text (it can only be a training "
                        "corpus or a validation set, with data.tokenizer naming the tokenizer that made it)")
    if path.suffix == ".jsonl":
        yield from read_jsonl(path, text_field)
    elif path.suffix == ".parquet":
        yield from read_parquet(path, text_field)
    else:
        yield read_text_file(path)


def _digest(parts: Iterable[str | bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))  # length prefix: ("ab","c") != ("a","bc")
        digest.update(data)
    return digest.hexdigest()


def _file_digests(files: list[Path], text_field: str) -> Iterator[str]:
    yield text_field
    for path in files:
        content = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                content.update(block)
        # The suffix decides how bytes become documents, so it is part of the identity.
        yield path.suffix if path.suffix in FOLDER_SUFFIXES else ".txt"
        yield content.hexdigest()


def _file_source(spec: str, path: Path, text_field: str, token_dtype: str = "auto") -> Source:
    files = list_files(path, spec)

    def read() -> Iterator[str]:
        for file in files:
            yield from read_file(file, text_field)

    def parts() -> list[Part]:
        return [part for file in files
                for part in (jsonl_parts(spec, file, text_field) if file.suffix == ".jsonl"
                             else [Part(spec, str(file), text_field, token_dtype=token_dtype)])]

    # How .bin bytes become ids is part of their identity; text files keep the key they always had.
    identity = [*_file_digests(files, text_field)]
    if any(file.suffix == ".bin" for file in files):
        identity.append(f"token_dtype={token_dtype}")
    return Source(spec=spec, fingerprint=_digest(identity), read=read, parts=parts)


def _hf_source(spec: str, text_field: str) -> Source:
    match = HF_SPEC.match(spec)
    if match is None:
        raise DataError(f"{spec!r} is not a Hugging Face spec; write hf:NAME[:CONFIG]:SPLIT")
    # HF_HOME must be set before the hub library is imported; cache_dir covers an earlier import.
    os.environ.setdefault("HF_HOME", str(home_subdir("huggingface")))
    import datasets

    try:
        dataset = datasets.load_dataset(match["name"], match["config"], split=match["split"],
                                        cache_dir=str(home_subdir("huggingface", "datasets")))
    except Exception as err:  # the hub raises many types (offline, 404, auth); all mean "not available"
        raise DataError(f"data source {spec!r}: could not load the Hugging Face dataset "
                        f"({type(err).__name__}: {err})") from err
    if text_field not in dataset.column_names:
        raise DataError(f"data source {spec!r}: dataset has no {text_field!r} column "
                        f"(columns: {dataset.column_names}); set data.text_field")

    def read() -> Iterator[str]:
        for batch in dataset.select_columns([text_field]).iter(batch_size=1024):
            yield from batch[text_field]

    # datasets fingerprints a split from its files and transforms; good enough as a cache key.
    return Source(spec=spec, fingerprint=_digest(["hf", spec, text_field, dataset._fingerprint]), read=read)


def _pydoc_source() -> Source:
    documents = shakespeare.pydoc_documents()
    return Source(spec=PYDOC, fingerprint=_digest(["pydoc", *documents]), read=lambda: iter(documents))


def open_source(spec: str, *, text_field: str = "text", token_dtype: str = "auto") -> Source:
    """Resolve one canonical source spec (see :mod:`mhmoe.config.data`)."""
    if spec in (SHAKESPEARE_TRAIN, SHAKESPEARE_VAL):
        train, val = shakespeare.extracted_splits()
        return _file_source(spec, train if spec == SHAKESPEARE_TRAIN else val, "text")
    if spec == PYDOC:
        return _pydoc_source()
    if spec == HOLDOUT:
        raise DataError(f"{HOLDOUT!r} is cut from a training corpus: use holdout_source(DataConfig)")
    if spec.startswith("hf:"):
        return _hf_source(spec, text_field)
    return _file_source(spec, Path(spec).expanduser(), text_field, token_dtype)


def concat_sources(sources: list[Source]) -> Source:
    """Several sources read one after the other, as one."""
    if len(sources) == 1:
        return sources[0]

    def read() -> Iterator[str]:
        for source in sources:
            yield from source.documents()

    splittable = [s.parts for s in sources if s.parts is not None]

    def parts() -> list[Part]:
        return [part for source_parts in splittable for part in source_parts()]

    return Source(spec=" + ".join(s.spec for s in sources),
                  fingerprint=_digest(["concat", *(s.fingerprint for s in sources)]), read=read,
                  parts=parts if len(splittable) == len(sources) else None)


def _is_local(spec: str) -> bool:
    return spec not in BUILTIN_SOURCES and not spec.startswith("hf:")


def check_local_paths(data: DataConfig) -> None:
    """Cheap check before anything is created: every file or folder the config names exists and a
    folder holds a readable file type. Reads no content (bad records surface when the data is read)."""
    named = [(f"data.corpus[{i}]", spec) for i, spec in enumerate(data.corpus_specs())]
    named += [(f"data.val_sets[{i}]", entry.partition("=")[2]) for i, entry in enumerate(data.val_sets)
              if "=" in entry]
    for field, spec in named:
        spec = canonical_source(spec, role="train")
        if _is_local(spec):
            try:
                files = list_files(Path(spec).expanduser(), spec)
            except DataError as err:
                raise DataError(f"{field}: {err}") from None
            _check_pretokenized(data, field, spec, files)
    if data.tokenizer.endswith(".json") and not Path(data.tokenizer).expanduser().is_file():
        raise DataError(f"data.tokenizer={data.tokenizer!r} does not exist; give a tokenizer.json file, "
                        "'bpe' or 'byte'")


def _check_pretokenized(data: DataConfig, field: str, spec: str, files: list[Path]) -> None:
    """Token files need the tokenizer that made them and have no documents to hold out."""
    if not any(file.suffix in TOKEN_SUFFIXES for file in files):
        return
    if data.tokenizer == "bpe":
        raise DataError(f"{field}={spec!r} holds pre-tokenized files: set data.tokenizer to the tokenizer.json "
                        "(or byte) that made them")
    if field.startswith("data.corpus") and data.holdout_fraction > 0:
        raise DataError(f"{field}={spec!r} holds pre-tokenized files, which have no documents to hold out; "
                        "set data.holdout_fraction=0")


def holds_out(index: int, fraction: Fraction) -> bool:
    """Whether document ``index`` (0-based, over the whole training corpus) belongs to the holdout set."""
    # Evenly strided, not sampled: a pure function of the position needs no seed, spreads the holdout
    # over every source of the corpus (not just its tail) and takes exactly floor(n * fraction) of n
    # documents. Exact rationals, so 0.29 of 100 documents is 29, not the 28 float rounding gives.
    return (index + 1) * fraction // 1 > index * fraction // 1


def _split(corpus: Source, fraction: float, *, held: bool) -> Source:
    """The corpus documents :func:`holds_out` takes (``held``) or leaves for training; the fingerprint
    covers the fraction and the side, so token and tokenizer caches key on both."""
    rate = Fraction(repr(fraction))

    def read() -> Iterator[str]:
        count = total = 0
        for total, text in enumerate(corpus.documents(), start=1):
            if holds_out(total - 1, rate) == held:
                count += 1
                yield text
        if held and count == 0:
            raise DataError(f"data.holdout_fraction={fraction} holds out none of the {total} documents of the "
                            f"training corpus {corpus.spec!r} (it takes floor(documents x fraction)); raise it "
                            "or use a corpus with more documents")

    side = HOLDOUT if held else "train"
    return Source(spec=f"{corpus.spec} ({side} side of data.holdout_fraction={fraction})",
                  fingerprint=_digest([HOLDOUT, side, repr(fraction), corpus.fingerprint]), read=read)


def _corpus(data: DataConfig) -> Source:
    return concat_sources([open_source(spec, text_field=data.text_field, token_dtype=data.token_dtype)
                           for spec in data.train_specs()])


def train_source(data: DataConfig) -> Source:
    """The training corpus (every ``data.corpus`` source, in order) less the holdout documents; with
    ``data.holdout_fraction`` = 0 exactly the corpus, so caches built before the holdout stay valid."""
    corpus = _corpus(data)
    return corpus if data.holdout_fraction == 0 else _split(corpus, data.holdout_fraction, held=False)


def train_stream_sources(data: DataConfig) -> list[Source]:
    """The sources tokenized into training streams: the corpus as one, or one per weighted mixture entry
    (``data.train_weights()``, in the same order)."""
    if data.train_weights() is None:
        return [train_source(data)]
    return [open_source(spec, text_field=data.text_field, token_dtype=data.token_dtype)
            for spec in data.train_specs()]


def holdout_source(data: DataConfig) -> Source:
    """The ``holdout`` validation set: the training-corpus documents :func:`train_source` leaves out."""
    if data.holdout_fraction == 0:
        raise DataError("data.holdout_fraction is 0: no documents are held out")
    return _split(_corpus(data), data.holdout_fraction, held=True)


def _val_source(data: DataConfig, spec: str) -> Source:
    if spec == HOLDOUT:
        return holdout_source(data)
    return open_source(spec, text_field=data.text_field, token_dtype=data.token_dtype)


def val_source(data: DataConfig, name: str) -> Source:
    """One named validation set; a name ``data.val_sets`` does not define is a DataError."""
    specs = data.val_specs()
    if name not in specs:
        raise DataError(f"no validation set {name!r}; data.val_sets defines {list(specs)}")
    return _val_source(data, specs[name])


def val_sources(data: DataConfig) -> dict[str, Source]:
    """Validation sources by name, in ``data.val_names`` order."""
    return {name: _val_source(data, spec) for name, spec in data.val_specs().items()}


def val_texts(data: DataConfig) -> dict[str, str]:
    """Held-out text of every validation set (documents joined by a blank line), for lm-eval."""
    return {name: DOCUMENT_SEPARATOR.join(source.documents()) for name, source in val_sources(data).items()}
