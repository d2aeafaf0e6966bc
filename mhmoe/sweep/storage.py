"""Optuna RDB storage for sweeps, and the lock that makes claiming a trial atomic.

SQLite (one machine; the default, a file under the mhmoe home) and PostgreSQL (many nodes) are
both plain Optuna RDB storages, so ``optuna-dashboard <url>`` shows a sweep as a normal study.
SQLite has no row locks: two workers can both pop the same WAITING trial (seen with Optuna 5), so every
queue mutation (submit, re-queue, tell; claims too except on PostgreSQL, see :mod:`mhmoe.sweep.queue`) runs
under :func:`queue_lock` -- a file lock next to the SQLite file, or a transaction-scoped advisory lock on
PostgreSQL, which also covers workers on other nodes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mhmoe.store.urls import StoreError, check_db_url, redact, sqlite_file

STORAGE_ENV = "MHMOE_SWEEP_STORAGE"
LOCK_TIMEOUT_S = 600.0
BACKENDS = ("sqlite", "postgresql", "mysql")
"""URL schemes (before any ``+driver``) that Optuna's RDBStorage and :func:`queue_lock` handle."""
StorageError = StoreError
"""The storage URL is malformed or names a file that is not an Optuna SQLite database."""


def storage_url(cli: str | None = None, spec_storage: str | None = None) -> str:
    """--storage, else $MHMOE_SWEEP_STORAGE, else the spec's ``storage``, else SQLite in the home."""
    from mhmoe.store.home import default_sweep_storage

    return cli or os.environ.get(STORAGE_ENV) or spec_storage or default_sweep_storage()


def sqlite_path(url: str) -> Path | None:
    """File of a ``sqlite:///...`` URL (None for other backends)."""
    return sqlite_file(url)


def check_storage(url: str) -> None:
    """Refuse a malformed URL, an unknown backend, or a SQLite file that exists but is not a database.

    Opening a zero-byte file, SQLite would treat it as a new empty database and Optuna would
    re-create the study in it (re-queueing every point): refused too. Opens nothing.
    """
    check_db_url(url, what="storage", backends=BACKENDS, allow_empty_file=False)


def store_exists(url: str) -> bool:
    """False when a SQLite store's file is absent (reading it must not create it); True otherwise."""
    path = sqlite_path(url)
    return path is None or path.is_file()


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
):
    """An ``optuna.storages.RDBStorage`` with heartbeats when ``heartbeat_interval`` is given.

    On a server database every call rides out an outage (:mod:`mhmoe.sweep.outage`).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Writers wait for each other instead of failing with "database is locked".
        engine_kwargs: dict = {"connect_args": {"timeout": 120}}
    else:
        # pre_ping: a pooled connection that died with a server restart is replaced, not used.
        # One connection kept per storage between calls (a server allows ~100 clients in all); calls that
        # overlap it (the queue lock's connection, the heartbeat thread) open one more and close it after.
        engine_kwargs = {"pool_pre_ping": True, "pool_size": 1, "max_overflow": 8}

    def create():
        from mhmoe.sweep.outage import OutageWatch, RetryingRDBStorage

        kwargs = {"engine_kwargs": engine_kwargs, "heartbeat_interval": heartbeat_interval,
                  "grace_period": grace_period}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if path is not None:
                return optuna.storages.RDBStorage(url, **kwargs)
            return RetryingRDBStorage(url, outage=OutageWatch(url), **kwargs)

    return _creating_once(url, create)


def _creating_once(url: str, create: Callable[[], Any]) -> Any:
    """Run ``create`` so two processes opening a fresh store at once cannot both create its tables.

    SQLite: under a file lock beside the database. Server databases: one retry, since the loser of
    a CREATE TABLE race fails once and then finds the tables there.
    """
    path = sqlite_path(url)
    if path is not None:
        from filelock import FileLock

        with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
            return create()
    from mhmoe.sweep.outage import StorageUnavailable

    try:
        return create()
    except StorageUnavailable:
        raise  # the whole retry window is spent already
    except Exception:  # noqa: BLE001 - the retry re-raises anything that was not the race
        time.sleep(1.0)
        return create()


def _advisory_key(study_name: str) -> int:
    """A stable signed 64-bit key per study for pg_advisory_xact_lock."""
    digest = hashlib.sha256(f"mhmoe.sweep:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def queue_lock(storage, url: str, study_name: str) -> Iterator[None]:
    """Serialise queue mutations of one study across processes (and nodes, on PostgreSQL)."""
    path = sqlite_path(url)
    if path is not None:
        from filelock import FileLock

        with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
            yield
    elif url.startswith("postgresql"):
        with _advisory_lock(storage, _advisory_key(study_name)):
            yield
    else:
        # Other RDBs (MySQL): Optuna's SELECT ... FOR UPDATE makes the WAITING -> RUNNING swap atomic.
        yield


@contextlib.contextmanager
def try_queue_lock(storage, url: str, study_name: str) -> Iterator[bool]:
    """:func:`queue_lock` for work any worker may do (reaping stale trials): on PostgreSQL only if it is free
    now (yields False, holding nothing, when not), since after a worker death every claim finds the stale trial
    and 100+ workers queueing for the lock one by one would each just find it reaped. Elsewhere it waits."""
    if url.startswith("postgresql"):
        with _advisory_lock(storage, _advisory_key(study_name), wait=False) as held:
            yield held
    else:
        with queue_lock(storage, url, study_name):
            yield True


@contextlib.contextmanager
def _advisory_lock(storage, key: int, *, wait: bool = True) -> Iterator[bool]:
    """A transaction-scoped advisory lock: released on commit/rollback, even if this process dies mid-claim.

    Taking it rides out an outage like any storage call. If the server restarts while it is held, the
    lock went with the old server; the body's own calls retry, and Optuna's row lock on the
    WAITING -> RUNNING swap still keeps a claim single, so the release just drops the dead connection.
    """
    from sqlalchemy import text

    from mhmoe.sweep.outage import call_on, connection_error

    def acquire():
        conn = storage.engine.connect()
        try:
            conn.begin()
            if wait:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
                return conn, True
            return conn, bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key}).scalar())
        except BaseException:
            conn.close()
            raise

    conn, held = call_on(storage, acquire)
    try:
        yield held
    finally:
        try:
            conn.commit()
        except Exception as err:  # noqa: BLE001 - re-raised unless the server went away
            if connection_error(err) is None:
                raise
        finally:
            conn.close()


__all__ = ["STORAGE_ENV", "StorageError", "check_storage", "open_storage", "queue_lock", "redact", "sqlite_path",
           "store_exists", "storage_url", "try_queue_lock"]
