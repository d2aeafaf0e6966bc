"""Documents of the ``mhmoe_heldout_ppl`` task: the held-out Shakespeare plays, one per scene.

A scene is a natural document (it opens with its own heading and setting), and ~75 of them make
``--limit N`` meaningful where 4 whole plays would not. Text before a play's first scene (title,
dramatis personae) stays with that scene, so the documents cover every character of the plays.
The JSON Lines file is built from the corpus into the mhmoe home and rebuilt when its source changes.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from mhmoe.config.data import SHAKESPEARE_VAL

# "SCENE I. London." / "SCENE 2" / "Scene III." at the start of a line.
SCENE_HEADING = re.compile(r"^(?:SCENE|Scene)\s+[IVXLC0-9]+\b", re.MULTILINE)
SPLIT_VERSION = "scenes/v1"
"""Part of the cache key: change it whenever :func:`split_scenes` changes."""


def split_scenes(play: str) -> list[str]:
    """The play cut before every scene heading but the first; a play without headings stays whole."""
    starts = [m.start() for m in SCENE_HEADING.finditer(play)][1:]
    bounds = [0, *starts, len(play)]
    return [play[a:b] for a, b in zip(bounds, bounds[1:]) if play[a:b].strip()]


def heldout_documents(plays: Iterable[str]) -> list[dict[str, object]]:
    """One record (``text``, ``play``, ``scene`` indices) per scene of every play, in order."""
    return [{"text": text, "play": p, "scene": s}
            for p, play in enumerate(plays) for s, text in enumerate(split_scenes(play))]


def write_heldout_jsonl(path: Path) -> Path:
    """Build ``path`` unless it already holds the current documents (a sidecar keeps the fingerprint)."""
    from mhmoe.data import open_source

    source = open_source(SHAKESPEARE_VAL)  # fetches and extracts the corpus on first use
    fingerprint = f"{SPLIT_VERSION}:{source.fingerprint}"
    stamp = path.with_suffix(".source")
    if path.is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write-then-rename: evaluations running in parallel never read half a file.
    fd, tmp = tempfile.mkstemp(prefix=".heldout.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for record in heldout_documents(source.documents()):
            f.write(json.dumps(record) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    stamp.write_text(fingerprint)
    return path
