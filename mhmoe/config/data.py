"""DataConfig: which text trains the model, which named sets validate it, and how it is tokenized.

Config holds strings; :mod:`mhmoe.data.sources` turns them into readers. A *source spec* is one of

- ``shakespeare`` / ``shakespeare:train`` / ``shakespeare:val``: the embedded corpus (training plays or
  the held-out plays, :mod:`mhmoe.data.shakespeare`); bare ``shakespeare`` means the training plays in
  ``corpus`` and the held-out plays in ``val_sets``;
- ``pydoc``: the Python language-reference topics from the standard library (out-of-domain);
- ``holdout`` (validation only): the documents ``data.holdout_fraction`` takes out of the training corpus;
- ``hf:NAME[:CONFIG]:SPLIT``: a Hugging Face dataset (needs the hub), e.g.
  ``hf:wikitext:wikitext-103-raw-v1:validation`` or ``hf:allenai/c4:en:validation[:2000]``;
- anything else is a path: a ``.txt`` file, a ``.jsonl`` file (one ``{"text": ...}`` record a line, the
  RedPajama format), a ``.parquet`` file with a ``text`` column, or a folder read recursively;
- a pre-tokenized ``.bin`` (raw little-endian uint16/uint32 ids, ``data.token_dtype``) or ``.npy`` file (a 1-D
  uint16/uint32 array), or a folder of them (nanoGPT/OLMo-style): their ids are used as they are (no EOS added),
  so ``data.tokenizer`` must name the tokenizer.json (or ``byte``) that made them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mhmoe.config.base import ConfigError, check, check_positive, from_dict


class DataError(ValueError):
    """The data itself is unusable (missing file, bad record, too little text); says where and why."""


SHAKESPEARE_TRAIN = "shakespeare:train"
SHAKESPEARE_VAL = "shakespeare:val"
PYDOC = "pydoc"
HOLDOUT = "holdout"
"""The training corpus's held-out documents (``data.holdout_fraction``): a validation set, never a corpus."""
BUILTIN_SOURCES = (SHAKESPEARE_TRAIN, SHAKESPEARE_VAL, PYDOC, HOLDOUT)
BUILTIN_VAL_SETS = {"shakespeare": SHAKESPEARE_VAL, "pydoc": PYDOC, "holdout": HOLDOUT}
"""Validation sets named by a bare name in ``data.val_sets``."""
TOKENIZER_KINDS = ("bpe", "byte")
TOKEN_SUFFIXES = (".bin", ".npy")
"""Pre-tokenized files: ids, not text."""
TOKEN_DTYPES = ("auto", "uint16", "uint32")
MIN_BPE_VOCAB = 257
"""256 byte symbols + the end-of-text token: the smallest byte-level BPE vocabulary."""

# Split slices may hold colons (``train[:10%]``), so CONFIG and SPLIT stop at a bracket.
HF_SPEC = re.compile(r"^hf:(?P<name>[^:\[\]]+)(?::(?P<config>[^:\[\]]+))?:(?P<split>[^:\[\]]+(?:\[[^\]]*\])?)$")
# Val-set names become metric names (``val/<name>/loss``): keep them to safe characters.
VAL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def canonical_source(spec: str, *, role: str) -> str:
    """Resolve the bare ``shakespeare`` alias: training plays in the corpus, held-out plays in val sets."""
    if spec == "shakespeare":
        return SHAKESPEARE_TRAIN if role == "train" else SHAKESPEARE_VAL
    return spec


def _check_source_spec(field: str, spec: str) -> None:
    check(isinstance(spec, str) and spec.strip() == spec and spec != "",
          f"{field}={spec!r} must be a non-empty source spec without surrounding spaces")
    if spec.startswith("hf:"):
        check(HF_SPEC.match(spec) is not None,
              f"{field}={spec!r} is not a Hugging Face spec; write hf:NAME[:CONFIG]:SPLIT "
              "(e.g. hf:wikitext:wikitext-2-raw-v1:validation)")
    elif spec.startswith("shakespeare:"):
        check(spec in BUILTIN_SOURCES,
              f"{field}={spec!r}: choose shakespeare, {SHAKESPEARE_TRAIN} or {SHAKESPEARE_VAL}")


@dataclass(frozen=True, kw_only=True)
class CorpusEntry:
    """One source of a weighted mixture in ``data.corpus``: ``{path: SOURCE, weight: W}``."""

    path: str
    """A source spec (see the module docstring)."""
    weight: float = 1.0
    """Training windows are drawn from this source in proportion to its weight (> 0) over the sum."""


def _corpus_entry(i: int, entry: Any) -> str | CorpusEntry:
    if isinstance(entry, Mapping):
        entry = from_dict(CorpusEntry, entry, prefix=f"data.corpus[{i}]")
    if isinstance(entry, CorpusEntry):
        weight = entry.weight
        check(not isinstance(weight, bool) and isinstance(weight, (int, float)) and math.isfinite(weight)
              and weight > 0, f"data.corpus[{i}].weight={weight!r} must be a finite number > 0")
        return entry
    check(isinstance(entry, str), f"data.corpus[{i}]={entry!r} must be a source spec or {{path: SOURCE, weight: W}}")
    return str(entry)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Training corpus, named validation sets and tokenizer. Every cache lives under MHMOE_HOME."""

    corpus: tuple[Any, ...] = ("shakespeare",)
    """Training source specs, concatenated in order (see the module docstring); default: the training plays.
    Entries written {path: SOURCE, weight: W} make a weighted mixture instead: each training window comes
    from one source, drawn in proportion to the weights (a bare spec in a mixture weighs 1)."""
    val_sets: tuple[str, ...] = ("shakespeare", "pydoc")
    """Validation sets in report order: a built-in name (shakespeare = held-out plays, pydoc = Python
    reference topics, holdout = see holdout_fraction) or NAME=SOURCE (e.g.
    wiki=hf:wikitext:wikitext-2-raw-v1:validation); empty = none."""
    tokenizer: str = "bpe"
    """bpe (byte-level BPE trained on the corpus, cached by content hash), byte (256 bytes + EOS),
    or a path to a tokenizer.json."""
    vocab_size: int = 4096
    """BPE vocabulary size including the end-of-text token (>= 257); ignored for byte or a file."""
    val_max_windows: int = 64
    """Validation windows per set, evenly strided over the set; 0 = every window. The data module's
    val_max_windows argument overrides it."""
    text_field: str = "text"
    """Field (JSON Lines, Hugging Face) or column (Parquet) that holds the document text."""
    token_dtype: str = "auto"
    """Id type of pre-tokenized .bin files in data.corpus: uint16, uint32, or auto (uint16 when the
    tokenizer's vocabulary fits in 16 bits, else uint32). .npy files carry their own."""
    holdout_fraction: float = 0.0
    """Fraction of the training corpus's documents held out as the validation set named holdout
    (0 = none): tuning trials validate on unseen text without touching the reported validation sets."""

    def __post_init__(self) -> None:
        # A bare string is a one-source list; tuples keep the frozen config hashable.
        for name in ("corpus", "val_sets"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            elif isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        check(len(self.corpus) > 0, "data.corpus must name at least one training source (default: shakespeare)")
        object.__setattr__(self, "corpus", tuple(_corpus_entry(i, entry) for i, entry in enumerate(self.corpus)))
        for i, spec in enumerate(self.corpus_specs()):
            _check_source_spec(f"data.corpus[{i}]", spec)
            check(spec != HOLDOUT, f"data.corpus[{i}]={spec!r} is the validation set cut from the corpus itself; "
                                   "it cannot be a training source")
        check(0 <= self.holdout_fraction < 0.5,
              f"data.holdout_fraction={self.holdout_fraction!r} must be in [0, 0.5) (0 = no holdout set)")
        specs = self.val_specs()  # validates names and specs
        for i, (entry, spec) in enumerate(zip(self.val_sets, specs.values(), strict=True)):
            check(spec != HOLDOUT or self.holdout_fraction > 0,
                  f"data.val_sets[{i}]={entry!r} needs data.holdout_fraction > 0 (it is 0: nothing is held out)")
        self._check_no_leak(specs)
        check(
            self.tokenizer in TOKENIZER_KINDS or self.tokenizer.endswith(".json"),
            f"data.tokenizer={self.tokenizer!r} is not allowed; choose 'bpe', 'byte' or a path to a tokenizer.json",
        )
        check_positive("data.vocab_size", self.vocab_size)
        if self.tokenizer == "bpe":
            check(self.vocab_size >= MIN_BPE_VOCAB,
                  f"data.vocab_size={self.vocab_size} must be >= {MIN_BPE_VOCAB} for data.tokenizer='bpe' "
                  "(256 byte symbols + the end-of-text token)")
        check(self.vocab_size <= 2**32, f"data.vocab_size={self.vocab_size} must be <= 2**32 (uint32 token ids)")
        check(self.token_dtype in TOKEN_DTYPES,
              f"data.token_dtype={self.token_dtype!r} is not allowed; choose one of {list(TOKEN_DTYPES)}")
        check(self.train_weights() is None or self.holdout_fraction == 0,
              "data.holdout_fraction must be 0 with a weighted data.corpus (the holdout is cut from one stream)")
        for i, spec in enumerate(self.corpus_specs()):
            if spec.endswith(TOKEN_SUFFIXES):
                check(self.tokenizer != "bpe",
                      f"data.corpus[{i}]={spec!r} is pre-tokenized: set data.tokenizer to the tokenizer.json "
                      "(or byte) that made it")
        check_positive("data.val_max_windows", self.val_max_windows, allow_zero=True)
        check(self.text_field != "", "data.text_field must name a field, e.g. 'text'")

    def corpus_specs(self) -> tuple[str, ...]:
        """The source spec of every ``data.corpus`` entry, as written."""
        return tuple(entry.path if isinstance(entry, CorpusEntry) else entry for entry in self.corpus)

    def train_weights(self) -> tuple[float, ...] | None:
        """Mixture weights of the corpus entries (a bare spec weighs 1); None when no entry has a weight."""
        if not any(isinstance(entry, CorpusEntry) for entry in self.corpus):
            return None
        return tuple(float(entry.weight) if isinstance(entry, CorpusEntry) else 1.0 for entry in self.corpus)

    def train_specs(self) -> tuple[str, ...]:
        """Training source specs with the ``shakespeare`` alias resolved."""
        return tuple(canonical_source(spec, role="train") for spec in self.corpus_specs())

    def val_specs(self) -> dict[str, str]:
        """``{name: source spec}`` in report order; raises ConfigError naming the bad entry."""
        specs: dict[str, str] = {}
        for i, entry in enumerate(self.val_sets):
            field = f"data.val_sets[{i}]"
            if "=" in entry:
                name, _, spec = entry.partition("=")
                name = name.strip()
                _check_source_spec(field, spec)
            else:
                check(entry in BUILTIN_VAL_SETS,
                      f"{field}={entry!r} is neither a built-in set {sorted(BUILTIN_VAL_SETS)} nor NAME=SOURCE")
                name, spec = entry, BUILTIN_VAL_SETS[entry]
            check(VAL_NAME.match(name) is not None,
                  f"{field}={entry!r}: the set name {name!r} may hold only letters, digits, '_', '-' and '.'")
            check(name not in specs, f"{field}={entry!r}: validation set {name!r} is named twice")
            specs[name] = canonical_source(spec, role="val")
        return specs

    @property
    def val_names(self) -> list[str]:
        """Validation set names in report order."""
        return list(self.val_specs())

    def _check_no_leak(self, val_specs: dict[str, str]) -> None:
        # Only catches the same spec on both sides; overlapping files under different paths slip through.
        for i, spec in enumerate(self.train_specs()):
            for name, val_spec in val_specs.items():
                if spec == val_spec:
                    raise ConfigError(
                        f"data.corpus[{i}]={self.corpus_specs()[i]!r} is also validation set {name!r}: "
                        "validation text would leak into training"
                    )
