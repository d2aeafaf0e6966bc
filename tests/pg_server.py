"""A throw-away PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` on a free port in a temp dir.

``initdb`` refuses to run as root, so as root the server runs as an unprivileged user
(``postgres`` when it exists, else ``nobody``) on a directory that user owns. Usage::

    from tests.pg_server import postgres_server          # session fixture, yields a URL
    def test_x(postgres_server): ...                      # skips when the binaries are absent

or ``with PgServer.start() as server: server.url`` anywhere else (benchmarks, scripts).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BINARIES = ("initdb", "pg_ctl", "postgres")


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as() -> str | None:
    """The unprivileged user to run the server as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists for initdb")


def _command(user: str | None, args: list[str]) -> list[str]:
    return args if user is None else ["runuser", "-u", user, "--", *args]


@dataclass
class PgServer:
    """A running server; ``url`` is a SQLAlchemy/psycopg 3 URL to its ``postgres`` database."""

    root: Path
    port: int
    user: str | None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls) -> PgServer:
        user = _run_as()
        root = Path(tempfile.mkdtemp(prefix="mhmoe-pg-"))
        (root / "sock").mkdir()
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (root, root / "sock"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        server = cls(root=root, port=_free_port(), user=user)
        subprocess.run(_command(user, ["initdb", "-D", str(server.data_dir), "-A", "trust", "-U", "postgres",
                                       "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True, timeout=120)
        server.resume()
        return server

    def resume(self) -> None:
        """Start the server (again, after :meth:`pause`) on the same port and data."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root / 'sock'} -c fsync=off"
        subprocess.run(_command(self.user, ["pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60",
                                            "-l", str(self.root / "server.log"), "-o", options, "start"]),
                       check=True, capture_output=True, timeout=120)

    def pause(self) -> None:
        """Shut the server down the way an operator's restart does (clients are disconnected), keeping its data."""
        subprocess.run(_command(self.user, ["pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]),
                       check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        subprocess.run(_command(self.user, ["pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    """A PostgreSQL server for the whole session; skips with the reason when the binaries are absent."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"PostgreSQL server binaries not on PATH: {missing} (Debian: apt-get install postgresql)")
    server = PgServer.start()
    try:
        yield server
    finally:
        server.stop()


def fresh_database(server: PgServer, name: str) -> str:
    """Create an empty database ``name`` on ``server`` and return its URL (isolates tests)."""
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/{name}"
