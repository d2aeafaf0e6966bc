from __future__ import annotations

import pytest

from mhmoe.config.base import ConfigError, from_dict
from mhmoe.config.data import DataConfig


def test_default_is_the_embedded_corpus() -> None:
    data = DataConfig()
    assert data.train_specs() == ("shakespeare:train",)
    assert data.val_specs() == {"shakespeare": "shakespeare:val", "pydoc": "pydoc"}
    assert data.val_names == ["shakespeare", "pydoc"]
    assert (data.tokenizer, data.vocab_size, data.text_field) == ("bpe", 4096, "text")


def test_cli_strings_become_tuples() -> None:
    data = from_dict(DataConfig, {
        "corpus": "a.txt,shards/",
        "val_sets": "pydoc,wiki=hf:wikitext:wikitext-2-raw-v1:validation,c4=hf:allenai/c4:en:validation[:2000]",
        "vocab_size": "512",
    })
    assert data.corpus == ("a.txt", "shards/")
    assert data.val_names == ["pydoc", "wiki", "c4"]
    assert data.val_specs()["c4"] == "hf:allenai/c4:en:validation[:2000]"
    assert DataConfig(corpus="one.txt").corpus == ("one.txt",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tokenizer": "sentencepiece"}, "data.tokenizer='sentencepiece' is not allowed"),
        ({"vocab_size": 200}, "data.vocab_size=200 must be >= 257"),
        ({"vocab_size": 0, "tokenizer": "byte"}, "data.vocab_size=0 must be > 0"),
        ({"val_max_windows": -1}, "data.val_max_windows=-1 must be >= 0"),
        ({"corpus": ()}, "data.corpus must name at least one"),
        ({"corpus": ("hf:wikitext",)}, "data.corpus[0]='hf:wikitext' is not a Hugging Face spec"),
        ({"corpus": ("shakespeare:all",)}, "data.corpus[0]='shakespeare:all'"),
        ({"val_sets": ("wiki",)}, "data.val_sets[0]='wiki' is neither a built-in set"),
        ({"val_sets": ("pydoc", "pydoc")}, "validation set 'pydoc' is named twice"),
        ({"val_sets": ("my set=a.txt",)}, "may hold only letters"),
        ({"corpus": ("shakespeare:val",)}, "validation text would leak into training"),
        ({"corpus": ("a.txt",), "val_sets": ("held=a.txt",)}, "data.corpus[0]='a.txt' is also validation set 'held'"),
        ({"text_field": ""}, "data.text_field"),
    ],
)
def test_bad_fields_name_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        DataConfig(**kwargs)


def test_vocab_size_is_free_for_byte_and_file_tokenizers() -> None:
    assert DataConfig(tokenizer="byte", vocab_size=100).tokenizer == "byte"
    assert DataConfig(tokenizer="runs/tok/tokenizer.json", vocab_size=100).vocab_size == 100
