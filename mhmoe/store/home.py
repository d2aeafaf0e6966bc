"""The mhmoe home: one directory that holds every cache and store of an environment.

Data and tokenizer caches, the default SQLite tracking store, checkpoints and sweep storage all
live under it, so pointing ``MHMOE_HOME`` somewhere else isolates a whole environment (tests do
exactly that with a temporary directory).
"""

from __future__ import annotations

import os
from pathlib import Path

from mhmoe.config.folders import check_folder

ENV_VAR = "MHMOE_HOME"
DEFAULT_HOME = Path("~/.cache/mhmoe")


def home_path() -> Path:
    """The home directory, without creating it (for names of stores that reading must not create).

    A home under a regular file (``MHMOE_HOME=notes.txt/sub``) could never be created: refused here,
    where every command reads it, before anything is written."""
    home = Path(os.environ.get(ENV_VAR) or DEFAULT_HOME).expanduser().resolve()
    return check_folder(ENV_VAR, home)


def mhmoe_home() -> Path:
    """Return the home directory, creating it on first use."""
    home = home_path()
    home.mkdir(parents=True, exist_ok=True)
    return home


def home_subdir(*parts: str) -> Path:
    """A named directory under the home (``data``, ``tokenizers``, ``checkpoints``, ...)."""
    path = mhmoe_home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_tracking_uri(*explicit: str | None, recorded: str | None = None) -> str:
    """The MLflow store, by the one precedence every command uses.

    1. the first ``explicit`` URI given: a ``--tracking-uri`` flag, then a spec's ``tracking_uri``;
    2. ``$MLFLOW_TRACKING_URI``;
    3. ``recorded``: the URI a sweep's study recorded at submit (a worker on a node whose
       environment names another store follows the environment);
    4. the SQLite store in the mhmoe home (``<MHMOE_HOME>/mlflow.db``).
    """
    return next((uri for uri in explicit if uri), None) or os.environ.get("MLFLOW_TRACKING_URI") or recorded \
        or f"sqlite:///{home_path() / 'mlflow.db'}"


def default_tracking_uri() -> str:
    """The store when nothing is given: ``$MLFLOW_TRACKING_URI``, else SQLite in the home
    (:func:`resolve_tracking_uri`)."""
    return resolve_tracking_uri()


ARTIFACTS_DIR = "mlartifacts"
"""Beside a SQLite store (in the home, or wherever the store is): its runs' artifacts."""


def artifact_root_for(tracking_uri: str) -> str | None:
    """Artifacts beside a SQLite store (MLflow would otherwise use ./mlruns in the CWD).

    Other stores (an MLflow server) decide their own artifact location: None.
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    db = Path(tracking_uri[len(prefix):])
    root = db.parent / ARTIFACTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve().as_uri()


def default_sweep_storage() -> str:
    """SQLite Optuna storage inside the home."""
    return f"sqlite:///{home_path() / 'optuna.db'}"
