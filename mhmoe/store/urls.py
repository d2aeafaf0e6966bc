"""Checks of the URLs that name a store (Optuna sweep storage, MLflow tracking), before opening one.

Opening a store is what creates it, so a malformed URL or a file that is not a database must be
refused first: :func:`check_db_url` reads at most 16 bytes and opens nothing.
:func:`check_tracking_reachable` asks a tracking server or database whether it answers (creating
nothing), so a sweep is not submitted to a store that every worker would fail to reach.
"""

from __future__ import annotations

from pathlib import Path

from mhmoe.config.folders import folder_problem

SQLITE_HEADER = b"SQLite format 3\x00"
TRACKING_SCHEMES = ("http", "https", "file", "databricks")
"""Non-database MLflow tracking URI schemes (a plain path is a local file store too)."""
TRACKING_DB_BACKENDS = ("sqlite", "postgresql", "mysql", "mssql")
REACH_TIMEOUT_S = 5.0
"""How long :func:`check_tracking_reachable` waits for a tracking server or database to answer."""
CONNECT_TIMEOUT_ARG = {"postgresql": "connect_timeout", "mysql": "connect_timeout", "mssql": "timeout"}
"""The DBAPI driver's connect-timeout argument (seconds) per backend."""


class StoreError(ValueError):
    """A store URL is malformed, or names a file that is not the database it should be."""


def redact(url: str) -> str:
    """The URL without its password, for printing."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def sqlite_file(url: str) -> Path | None:
    """File of a ``sqlite:///...`` URL (None for other backends)."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///"):])


def check_db_url(url: str, *, what: str, backends: tuple[str, ...], allow_empty_file: bool) -> None:
    """Refuse a malformed database URL, a backend not in ``backends``, or a SQLite path that is a
    folder or a file without the SQLite header (a zero-byte one too unless ``allow_empty_file``)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    label = f"{what} {redact(url)!r}"
    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):
        raise StoreError(f"{label} is not a database URL; write sqlite:///PATH or postgresql://USER@HOST/DB") from None
    if backend not in backends:
        raise StoreError(f"{label}: backend {backend!r} is not supported; choose one of {list(backends)}")
    if backend != "sqlite":
        return
    path = sqlite_file(url)
    if path is None or str(path) in ("", ":memory:"):
        raise StoreError(f"{label} names no file; write sqlite:///PATH (an absolute path has four slashes: "
                         "sqlite:////abs/file.db)")
    if path.is_dir():
        raise StoreError(f"{label}: {path} is a folder; name the SQLite file inside it")
    problem = folder_problem(path.parent)
    if problem:  # SQLite could not create the file: a component of its folder is a file
        raise StoreError(f"{label}: {problem}")
    if not path.is_file():
        return
    with open(path, "rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if not header and not allow_empty_file:
        raise StoreError(f"{label}: {path} is an empty file (0 bytes), not a SQLite database; delete it to "
                         "start a new store, or name another one")
    if header and header != SQLITE_HEADER:
        raise StoreError(f"{label}: {path} is not a SQLite database (corrupt or another file); restore it or "
                         "name another one")


def check_tracking_uri(uri: str | None, *, what: str = "tracking URI") -> None:
    """An MLflow tracking URI: a path, an http(s)/file/databricks URI, or a database URL (checked as above)."""
    if not uri or "://" not in uri:
        return
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme in TRACKING_SCHEMES:
        return
    if scheme not in TRACKING_DB_BACKENDS:
        raise StoreError(f"{what} {redact(uri)!r}: scheme {scheme!r} is not an MLflow store; choose one of "
                         f"{list(TRACKING_SCHEMES + TRACKING_DB_BACKENDS)} or give a folder path")
    # MLflow creates its tables in an empty SQLite file: only a non-database file is refused.
    check_db_url(uri, what=what, backends=TRACKING_DB_BACKENDS, allow_empty_file=True)


def check_tracking_reachable(uri: str | None, *, what: str = "tracking URI") -> None:
    """Refuse an MLflow server (http/https) or database store (postgresql, mysql, mssql) that does not
    answer within :data:`REACH_TIMEOUT_S`; local stores (a path, file:, sqlite:) and databricks are not
    checked. Call after :func:`check_tracking_uri`. Connecting creates nothing: no table, no run."""
    if not uri or "://" not in uri:
        return
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme in ("http", "https"):
        problem = _http_problem(uri)
    elif scheme in CONNECT_TIMEOUT_ARG:
        problem = _database_problem(uri, scheme)
    else:
        return
    if problem:
        raise StoreError(f"{what} {redact(uri)!r}: {problem}")


def _http_problem(uri: str) -> str | None:
    """Why the MLflow server's ``/health`` endpoint gives no usable answer (None: it answers)."""
    import urllib.error
    import urllib.request

    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=REACH_TIMEOUT_S):
            return None
    except urllib.error.HTTPError as err:
        # It answers; 401/403: a server that wants the credentials the workers pass (MLFLOW_TRACKING_TOKEN ...).
        if err.code in (401, 403):
            return None
        return f"GET {redact(health)} answered HTTP {err.code}: no MLflow server there (`mlflow server`)"
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        return f"no answer from GET {redact(health)} ({reason}; timeout {REACH_TIMEOUT_S:g} s); start the MLflow " \
               "server or name another tracking URI"


def _database_problem(uri: str, backend: str) -> str | None:
    """Why a SQLAlchemy connection to the database store fails (None: it connects)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    try:
        engine = create_engine(uri, poolclass=NullPool,
                               connect_args={CONNECT_TIMEOUT_ARG[backend]: int(REACH_TIMEOUT_S)})
        try:
            with engine.connect():
                return None
        finally:
            engine.dispose()
    except ModuleNotFoundError as err:
        hint = "; name the installed driver in the URL, e.g. postgresql+psycopg://" if backend == "postgresql" else ""
        return f"its database driver is not installed ({err}){hint}"
    except Exception as err:  # noqa: BLE001 - any driver's connection error, reported in one line
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        return f"cannot connect ({first}; timeout {REACH_TIMEOUT_S:g} s)"


__all__ = ["REACH_TIMEOUT_S", "StoreError", "check_db_url", "check_tracking_reachable", "check_tracking_uri",
           "redact", "sqlite_file"]
