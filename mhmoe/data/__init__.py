"""Data pipeline: sources -> tokenizer -> memory-mapped token streams -> Lightning data module.

``MHMoEDataModule`` is imported lazily: the run config imports this package, and the lm-eval adapter only
needs the tokenizer, so neither should pay Lightning's import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mhmoe.config.data import DataConfig, DataError
from mhmoe.data.sources import Source, open_source, train_source, val_sources, val_texts
from mhmoe.data.tokenizer import BPETokenizer, ByteTokenizer, TextTokenizer, build_tokenizer, load_tokenizer
from mhmoe.data.tokens import stream_dtype, token_stream, val_stream

if TYPE_CHECKING:
    from mhmoe.data.datamodule import MHMoEDataModule


def __getattr__(name: str) -> Any:
    if name == "MHMoEDataModule":
        from mhmoe.data.datamodule import MHMoEDataModule

        return MHMoEDataModule
    raise AttributeError(f"module 'mhmoe.data' has no attribute {name!r}")


__all__ = [
    "BPETokenizer",
    "ByteTokenizer",
    "DataConfig",
    "DataError",
    "MHMoEDataModule",
    "Source",
    "TextTokenizer",
    "build_tokenizer",
    "load_tokenizer",
    "open_source",
    "stream_dtype",
    "token_stream",
    "train_source",
    "val_sources",
    "val_stream",
    "val_texts",
]
