"""One preparer per cache entry: the others wait for it, then find the entry built."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock


@contextlib.contextmanager
def cache_lock(lock_path: Path) -> Iterator[None]:
    """Hold ``lock_path`` (an OS lock: released when the holder dies, even by SIGKILL) while building.

    On failure the lock file and the folders made for it go again, so bad data leaves nothing behind.
    """
    created = [folder for folder in (lock_path.parent, *lock_path.parent.parents) if not folder.exists()]
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    existed = lock_path.exists()
    try:
        with FileLock(lock_path):
            yield
    except BaseException:
        if not existed:
            lock_path.unlink(missing_ok=True)
        for folder in created:  # innermost first; rmdir keeps a folder that holds anything
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
