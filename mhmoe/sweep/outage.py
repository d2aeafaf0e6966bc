"""Riding out a storage outage: Optuna storage calls that retry while a database server is unreachable.

A database restart or failover is routine on a cluster. Without this, the first refused connection
raised out of a heartbeat, a fence check or a claim and killed the worker. :class:`RetryingRDBStorage`
retries every storage call that failed for a connection reason (refused, reset, "the database system
is shutting down") with capped exponential backoff for a window of ``MHMOE_STORAGE_RETRY_S`` seconds
(default :data:`DEFAULT_WINDOW_S`), printing one line when the outage starts and one when it ends. Past
the window it raises :class:`StorageUnavailable`, one line naming the database. Only server databases
retry: a SQLite file is local, and its errors (a bad path, a locked file past the busy timeout) are not
outages.

Retrying a call is safe because each Optuna storage call is one transaction: a connection lost before
the commit rolled it back. The one ambiguous case, a connection lost during the commit of an enqueue,
can leave a second WAITING attempt of a point; :meth:`mhmoe.sweep.queue.SweepQueue.claim` discards such
a duplicate instead of training the point twice.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import optuna

from mhmoe.store.urls import StoreError, redact

WINDOW_ENV = "MHMOE_STORAGE_RETRY_S"
DEFAULT_WINDOW_S = 300.0
"""Long enough for a PostgreSQL restart or a managed failover (typically 30-120 s)."""
FIRST_DELAY_S, MAX_DELAY_S = 0.5, 8.0
"""Backoff: 0.5, 1, 2, 4, 8, 8, ... seconds between tries, so a recovered server is seen within 8 s."""
T = TypeVar("T")


class StorageUnavailable(StoreError):
    """The sweep database stayed unreachable for the whole retry window."""


def retry_window_s() -> float:
    """``$MHMOE_STORAGE_RETRY_S`` (seconds, >= 0; 0 = no retry), else :data:`DEFAULT_WINDOW_S`."""
    value = os.environ.get(WINDOW_ENV)
    if value is None or value == "":
        return DEFAULT_WINDOW_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise StoreError(f"{WINDOW_ENV}={value!r} must be a number of seconds >= 0 (how long storage calls "
                         f"retry an unreachable database; default {DEFAULT_WINDOW_S:g})")
    return seconds


def connection_error(err: BaseException) -> BaseException | None:
    """The connection-level database error behind ``err`` (Optuna wraps it in StorageInternalError), or None.

    SQLAlchemy raises OperationalError for a refused or reset connection and for a server that is
    starting up or shutting down; InterfaceError for a connection already closed; a DBAPIError with
    ``connection_invalidated`` for a disconnect found mid-query; PendingRollbackError for a session
    left over from a lost connection.
    """
    from sqlalchemy import exc

    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (exc.OperationalError, exc.InterfaceError, exc.PendingRollbackError)):
            return current
        if isinstance(current, exc.DBAPIError) and current.connection_invalidated:
            return current
        current = current.__cause__ or current.__context__
    return None


def first_line(err: BaseException) -> str:
    """The database's own message, one line (SQLAlchemy appends SQL and a help link below it)."""
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class OutageWatch:
    """Retries for one database and remembers when the last outage ended (for the stale-trial reaper)."""

    def __init__(self, url: str, window_s: float | None = None, log: Callable[[str], None] | None = None):
        self.url = url
        self.window_s = retry_window_s() if window_s is None else window_s
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._local = threading.local()  # depth: only the outermost call retries (no nested windows)
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self.recovered_at: float | None = None
        """``time.monotonic()`` when the last outage this process saw ended (None: none seen)."""

    def call(self, fn: Callable[[], T], *, reset: Callable[[], None] | None = None) -> T:
        """``fn()``, retried on connection errors until the window is spent; ``reset`` runs before each retry."""
        depth = getattr(self._local, "depth", 0)
        if depth:
            return fn()
        self._local.depth = 1
        try:
            return self._retrying(fn, reset)
        finally:
            self._local.depth = 0

    def _retrying(self, fn: Callable[[], T], reset: Callable[[], None] | None) -> T:
        started = time.monotonic()
        delay, tries = FIRST_DELAY_S, 0
        while True:
            try:
                result = fn()
            except Exception as err:
                cause = connection_error(err)
                if cause is None:
                    raise
                tries += 1
                waited = time.monotonic() - started
                self._outage_began(cause)
                if waited + delay > self.window_s:
                    raise StorageUnavailable(
                        f"storage {redact(self.url)} unreachable for {waited:.0f} s ({tries} tries): "
                        f"{first_line(cause)}; {WINDOW_ENV} sets how long to wait (now {self.window_s:g} s)"
                    ) from err
                time.sleep(delay)
                delay = min(2 * delay, MAX_DELAY_S)
                if reset is not None:
                    reset()
                continue
            self._outage_ended()
            return result

    def _outage_began(self, cause: BaseException) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        self._log(f"storage {redact(self.url)} unreachable ({first_line(cause)}); "
                  f"retrying for up to {self.window_s:g} s")

    def _outage_ended(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            down_s = time.monotonic() - self._down_since
            self._down_since = None
            self.recovered_at = time.monotonic()
        self._log(f"storage {redact(self.url)} reachable again after {down_s:.0f} s")

    def seconds_since_recovery(self) -> float:
        """Seconds since the last outage ended (infinite when this process saw none)."""
        return float("inf") if self.recovered_at is None else time.monotonic() - self.recovered_at


def call_on(storage: Any, fn: Callable[[], T]) -> T:
    """``fn()`` (a direct database read or lock beside Optuna's own calls) retried like a storage call when
    ``storage`` watches outages (a server database), else run once."""
    watch: OutageWatch | None = getattr(storage, "outage", None)
    return watch.call(fn) if watch is not None else fn()


# Storage calls that touch the database, including the private ones Optuna's cache layer (which every
# Study uses) calls directly. Others (remove_session, the heartbeat settings getters) do not, and schema
# upgrades are not run by workers.
_RETRIED = (
    "_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials",
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
    "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
    "get_best_trial", "get_n_trials", "get_trial_number_from_id", "get_trial_params", "record_heartbeat",
    "_get_stale_trial_ids", "check_trial_is_updatable",
)


def _retried(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self.outage.call(lambda: method(self, *args, **kwargs), reset=self.scoped_session.remove)

    return call


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """An Optuna RDB storage whose database calls ride out an outage of up to the retry window."""

    outage: OutageWatch

    def __init__(self, url: str, *, outage: OutageWatch, **kwargs: Any):
        self.outage = outage
        # Connecting (and creating the tables) is retried like any call.
        outage.call(lambda: super(RetryingRDBStorage, self).__init__(url, **kwargs))

    def reachable_for_s(self) -> float:
        """How long the database has been reachable as far as this process can tell: since the last outage
        it saw, and, on PostgreSQL, since the server (re)started (an outage other processes saw)."""
        seconds = self.outage.seconds_since_recovery()
        if self.url.startswith("postgresql"):
            from sqlalchemy import text

            def uptime() -> float:
                with self.engine.connect() as conn:
                    return float(conn.execute(text(
                        "SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())")).scalar_one())

            seconds = min(seconds, self.outage.call(uptime))
        return seconds

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("outage", None)  # locks do not pickle; an unpickled copy watches on its own
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        self.outage = OutageWatch(state["url"])
        super().__setstate__(state)


for _name in _RETRIED:
    if hasattr(optuna.storages.RDBStorage, _name):
        setattr(RetryingRDBStorage, _name, _retried(_name, getattr(optuna.storages.RDBStorage, _name)))


__all__ = ["DEFAULT_WINDOW_S", "WINDOW_ENV", "OutageWatch", "call_on", "RetryingRDBStorage", "StorageUnavailable",
           "connection_error", "retry_window_s"]
