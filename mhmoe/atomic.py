"""Atomic file writes: readers see the old file or the whole new one, never a partial one.

Used for every cache and checkpoint under the mhmoe home, so a crash mid-write (a SIGKILLed sweep
worker, a full disk) never leaves a corrupt file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None, *,
                 backup: str | Path | None = None) -> Iterator[IO]:
    """Write to a temp file beside ``path``, fsync, then rename over it; on error leave nothing.

    With ``backup``, an existing ``path`` is first renamed to ``backup`` (after the new file is
    complete), so a crash between the two renames leaves the old file under ``backup``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared home must stay readable
        if backup is not None and path.is_file():
            os.replace(path, backup)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (a power loss must not bring back the old names)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
