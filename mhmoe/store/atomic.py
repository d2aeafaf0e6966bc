"""Atomic file writes: readers see the old file or the whole new one, never a partial one.

Used for every cache and checkpoint under the mhmoe home, so a crash mid-write (a SIGKILLed sweep
worker, a full disk) never leaves a corrupt file behind. A write that fails because the disk is
full raises :class:`DiskFull`, one line saying where and how much is free; a SIGKILL mid-write
leaves only a temp file, which :func:`remove_stale_temp_files` clears when the folder's owner
starts again.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
"""The temp files :func:`atomic_write` writes: ``.<name>.<8 random characters>.tmp`` (mkstemp's)."""
TORCH_WRITE_FAILED = "unexpected pos"
"""torch's serializer reports a short write as ``[enforce fail at inline_container.cc...] unexpected
pos A vs B``, sometimes without the OSError behind it."""
NEARLY_FULL_BYTES = 64 * 2**20
"""A torch write failure with less than this free in the target folder is a full disk."""


class DiskFull(OSError):
    """A write failed because its file system is full: ``No space left on device: <folder> (<free> MB free)``."""

    def __init__(self, folder: Path, free_bytes: int):
        self.folder, self.free_bytes = folder, free_bytes
        super().__init__(f"No space left on device: {folder} ({free_bytes / 2**20:.0f} MB free)")


def as_disk_full(err: BaseException, folder: Path) -> DiskFull | None:
    """``err`` as :class:`DiskFull` when the disk is full, else None.

    Full means ENOSPC anywhere in the exception chain, or torch's errno-less short-write error
    while ``folder`` has next to nothing free (so check before the partial file is removed).
    """
    chain: list[BaseException] = []
    link: BaseException | None = err
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    for link in chain:
        if isinstance(link, DiskFull):
            return link
    if any(isinstance(link, OSError) and link.errno == errno.ENOSPC for link in chain):
        return DiskFull(folder, _free_bytes(folder))
    if any(isinstance(link, RuntimeError) and TORCH_WRITE_FAILED in str(link) for link in chain):
        free = _free_bytes(folder)
        return DiskFull(folder, free) if free < NEARLY_FULL_BYTES else None
    return None


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None, *,
                 backup: str | Path | None = None) -> Iterator[IO]:
    """Write to a temp file beside ``path``, fsync, then rename over it; on error leave nothing.

    With ``backup``, an existing ``path`` is first renamed to ``backup`` (after the new file is
    complete), so a crash between the two renames leaves the old file under ``backup``.
    A full disk raises :class:`DiskFull` (the partial temp file removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # no room left even for an empty file (blocks or inodes)
        full = as_disk_full(err, path.parent)
        if full is None:
            raise
        raise full from err
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared home must stay readable
        if backup is not None and path.is_file():
            os.replace(path, backup)
        os.replace(tmp, path)
    except BaseException as err:
        full = as_disk_full(err, path.parent)  # before the unlink frees the partial file's space
        Path(tmp).unlink(missing_ok=True)
        if full is not None and full is not err:
            raise full from err
        raise
    _fsync_dir(path.parent)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove the temp files :func:`atomic_write` left in ``folder`` when killed mid-write.

    Only for the folder's owner as it starts (a run's checkpoint folder under its claim): another
    writer's temp file in progress would go too. Returns what was removed.
    """
    if not Path(folder).is_dir():
        return []
    stale = [p for p in Path(folder).iterdir() if TEMP_NAME.match(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


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
