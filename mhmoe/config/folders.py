"""Folders a command will create (the home, checkpoint, report and log folders, a SQLite store's
folder): a path one of whose components is a regular file can never be created, so it is refused
as bad input before anything is written, instead of failing half-way with ``NotADirectoryError``."""

from __future__ import annotations

from pathlib import Path

from mhmoe.config.base import ConfigError


def blocking_file(path: Path) -> Path | None:
    """The first existing component of ``path`` (``path`` itself included) that is not a folder, else None."""
    path = Path(path).expanduser().absolute()
    for part in [*reversed(path.parents), path]:
        if not part.exists():
            return None  # nothing below an absent folder exists either
        if not part.is_dir():
            return part
    return None


def folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a folder (a component is a file), else None."""
    blocker = blocking_file(path)
    return None if blocker is None else f"{blocker} is a file, not a folder; choose another path"


def check_folder(what: str, path: Path) -> Path:
    """``path`` if it is or can become a folder; else a ConfigError naming ``what`` and the file in the way."""
    problem = folder_problem(path)
    if problem:
        raise ConfigError(f"{what}={str(path)!r}: {problem}")
    return path


__all__ = ["blocking_file", "check_folder", "folder_problem"]
