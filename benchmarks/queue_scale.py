"""The sweep queue at cluster scale: N worker processes on one PostgreSQL, 10% of them SIGKILLed mid-trial.

Run: .venv/bin/python benchmarks/queue_scale.py [--workers 16 64 128] [--sqlite 8] [--points P] [--seed 0]

Starts its own PostgreSQL on 127.0.0.1 (``tests/pg_server.py``), submits ``--points`` points (default 4 per
worker; the debug preset's config with distinct seeds, so each trial carries a real config dict) and runs N
worker processes (forked, no torch, started over ``--ramp`` seconds) through the real queue code:
:meth:`SweepQueue.claim` (which reaps stale trials; filtered by the device check a sweep worker applies),
:class:`Heartbeat` with its fence,
:meth:`SweepQueue.complete`. A trial body sleeps ``--trial-seconds``.
10% of the workers are SIGKILLed mid-trial and replaced at once; their trials come back through the
heartbeat reaper. Printed per N:

* points lost (no COMPLETE trial) and duplicated (more than one COMPLETE trial);
* workers died: exited non-zero without being killed by us (e.g. a refused connection);
* connection errors retried (outage lines the workers printed), the retry keeping them alive;
* claim latency p50 / p95 / max: one :meth:`SweepQueue.claim` that returned a trial, lock wait included;
* peak connections: ``pg_stat_activity`` of the study's database, sampled every 50 ms;
* busy fraction: seconds in finished trial bodies / (workers x wall time of the run).

The server runs with ``--max-connections`` (default: PostgreSQL's 100, raised to 2 per worker + 20 where
that is more; docs/SWEEPS.md says why). ``--sqlite N`` runs N workers on a SQLite file instead.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STUDY = "queue-scale"
KILL_FRACTION = 0.10


@dataclass(frozen=True)
class BenchPoint:
    """What :meth:`SweepQueue.submit` needs of a grid point (see :class:`mhmoe.sweep.plan.TrialPoint`)."""

    label: str
    config_hash: str
    config: dict[str, Any]

    def user_attrs(self) -> dict[str, Any]:
        return {"point": self.label, "group": "bench", "config_hash": self.config_hash, "variant": "bench",
                "seed": self.config["seed"], "metric": "val/loss", "coords": {}, "overrides": {},
                "config": self.config}


@dataclass(frozen=True)
class Settings:
    trial_s: tuple[float, float] = (5.0, 20.0)
    heartbeat_s: int = 5
    grace_s: int = 15
    poll_s: float = 2.0
    ramp_s: float = 10.0
    """Workers start spread over this many seconds, as an array's tasks do (scheduling, torch imports)."""


@dataclass
class Figures:
    backend: str
    workers: int
    points: int
    lost: int
    duplicated: int
    died: int
    killed: int
    retried_errors: int
    claim_p50: float
    claim_p95: float
    claim_max: float
    peak_connections: int | None
    peak_idle: int | None
    busy_fraction: float
    wall_s: float

    def line(self) -> str:
        peak = "-" if self.peak_connections is None else str(self.peak_connections)
        per = "" if self.peak_connections is None else (f" ({self.peak_connections / self.workers:.2f}/worker, "
                                                        f"idle {self.peak_idle})")
        return (f"{self.backend:10s} N={self.workers:3d}: lost {self.lost}, duplicated {self.duplicated}, "
                f"died {self.died} (killed {self.killed}), connection errors retried {self.retried_errors}; "
                f"claim p50 {self.claim_p50:.3f} s, p95 {self.claim_p95:.3f} s, max {self.claim_max:.3f} s; "
                f"peak connections {peak}{per}; busy {self.busy_fraction:.0%}; wall {self.wall_s:.0f} s")


def make_points(count: int) -> list[BenchPoint]:
    from mhmoe.config.presets import preset
    from mhmoe.config.run import RunConfig

    out = []
    for seed in range(count):
        config = RunConfig.from_dict({**preset("debug"), "seed": seed})
        out.append(BenchPoint(label=f"bench/seed={seed}", config_hash=config.config_hash(), config=config.to_dict()))
    return out


def _record(log, **fields: Any) -> None:
    log.write(json.dumps(fields) + "\n")
    log.flush()


def worker_body(url: str, settings: Settings, log_path: Path, seed: int) -> None:
    """One worker: claim -> heartbeat while the body sleeps -> complete, until nothing waits or runs."""
    from mhmoe.sweep.devices import DeviceFit
    from mhmoe.sweep.queue import Heartbeat, SweepQueue

    rng = random.Random(seed)
    fits = DeviceFit(1, lambda _line: None)  # as a sweep worker holding one device filters its claims
    queue = SweepQueue(url, STUDY, heartbeat_interval=settings.heartbeat_s, grace_period=settings.grace_s)
    with open(log_path, "a") as log:
        while True:
            start = time.monotonic()
            trial = queue.claim(accepts=fits)
            claim_s = time.monotonic() - start
            if trial is None:
                waiting, running = queue.pending()
                if waiting == 0 and running == 0:
                    return
                time.sleep(settings.poll_s)
                continue
            _record(log, claim_s=claim_s, trial=trial.number)
            body_s = rng.uniform(*settings.trial_s)
            with Heartbeat(queue, trial, settings.heartbeat_s, queue.fence(trial)):
                time.sleep(body_s)
            done = queue.complete(trial, body_s, {"bench_body_s": body_s})
            _record(log, busy_s=body_s, trial=None, completed=done)


def _process_main(url: str, settings: Settings, log_path: Path, seed: int) -> None:
    # stderr to a file: the outage lines (connection errors being retried) are counted from it
    fd = os.open(str(log_path.with_suffix(".err")), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 2)
    code = 0
    try:
        worker_body(url, settings, log_path, seed)
    except BaseException:  # noqa: BLE001 - a dying worker is what the benchmark counts
        import traceback

        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    os._exit(code)


class ConnectionSampler:
    """Peak client connections to one PostgreSQL database (our own sampling connection excluded)."""

    def __init__(self, dsn: str, database: str, every_s: float = 0.05):
        self._dsn, self._database, self._every_s = dsn, database, every_s
        self._stop = threading.Event()
        self.peak = 0
        self.peak_idle = 0
        """Connections held between calls (idle in a pool)."""
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self._dsn, autocommit=True) as conn:
            while not self._stop.wait(self._every_s):
                count, idle = conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE state = 'idle') FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (self._database,)).fetchone()
                self.peak, self.peak_idle = max(self.peak, int(count)), max(self.peak_idle, int(idle))

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _last_record(path: Path) -> dict[str, Any] | None:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    return json.loads(lines[-1]) if lines else None


def run_workers(url: str, workers: int, points: list[BenchPoint], workdir: Path, *, seed: int = 0,
                settings: Settings = Settings(), sampler: ConnectionSampler | None = None,
                backend: str = "postgresql") -> Figures:
    """Submit ``points``, run ``workers`` worker processes (killing 10% mid-trial), return the figures."""
    from mhmoe.sweep.queue import SweepQueue

    rng = random.Random(seed)
    submitter = SweepQueue(url, STUDY, create=True)
    submitter.submit(points, retries=3)
    submitter.close()  # forked workers must not inherit a pooled connection
    ctx = multiprocessing.get_context("fork")
    procs: dict[int, tuple[Any, Path]] = {}
    spawned = 0

    def spawn() -> None:
        nonlocal spawned
        log_path = workdir / f"worker{spawned}.jsonl"
        proc = ctx.Process(target=_process_main, args=(url, settings, log_path, seed * 100_000 + spawned))
        proc.start()
        procs[spawned] = (proc, log_path)
        spawned += 1

    to_kill = max(1, round(KILL_FRACTION * workers))
    expected_s = len(points) * statistics.mean(settings.trial_s) / workers
    kill_at = sorted(settings.ramp_s + rng.uniform(0.0, 0.5) * expected_s for _ in range(to_kill))
    killed: set[int] = set()
    start = time.monotonic()
    with sampler or _NoSampler():
        starts = sorted(rng.uniform(0, settings.ramp_s) for _ in range(workers))
        while starts or any(proc.is_alive() for proc, _ in procs.values()):
            elapsed = time.monotonic() - start
            while starts and elapsed >= starts[0]:
                starts.pop(0)
                spawn()
            if kill_at and elapsed >= kill_at[0]:
                in_trial = [k for k, (proc, log) in procs.items() if proc.is_alive() and k not in killed
                            and (_last_record(log) or {}).get("trial") is not None]
                if in_trial:
                    victim = rng.choice(in_trial)
                    os.kill(procs[victim][0].pid, signal.SIGKILL)
                    killed.add(victim)
                    kill_at.pop(0)
                    spawn()  # the replacement (a SLURM requeue)
            time.sleep(0.05)
        wall = time.monotonic() - start
    for proc, _ in procs.values():
        proc.join()
    return _figures(url, backend, workers, points, procs, killed, wall, sampler)


class _NoSampler:
    peak = peak_idle = None

    def __enter__(self) -> _NoSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _figures(url: str, backend: str, workers: int, points: list[BenchPoint], procs: dict, killed: set[int],
             wall: float, sampler: ConnectionSampler | None) -> Figures:
    from optuna.trial import TrialState

    from mhmoe.sweep.queue import SweepQueue

    queue = SweepQueue(url, STUDY)
    completes = Counter(t.user_attrs["config_hash"] for t in queue.trials((TrialState.COMPLETE,)))
    queue.close()
    claims, busy, retried = [], 0.0, 0
    for _, log_path in procs.values():
        for line in log_path.read_text().splitlines() if log_path.exists() else []:
            record = json.loads(line)
            if "claim_s" in record:
                claims.append(record["claim_s"])
            if record.get("completed"):
                busy += record["busy_s"]
        err = log_path.with_suffix(".err")
        retried += err.read_text().count("unreachable (") if err.exists() else 0
    died = sum(proc.exitcode != 0 for k, (proc, _) in procs.items() if k not in killed)
    claims.sort()
    return Figures(
        backend=backend, workers=workers, points=len(points),
        lost=sum(completes[p.config_hash] == 0 for p in points),
        duplicated=sum(completes[p.config_hash] > 1 for p in points),
        died=died, killed=len(killed), retried_errors=retried,
        claim_p50=statistics.median(claims) if claims else float("nan"),
        claim_p95=claims[min(len(claims) - 1, int(0.95 * len(claims)))] if claims else float("nan"),
        claim_max=claims[-1] if claims else float("nan"),
        peak_connections=None if sampler is None else sampler.peak,
        peak_idle=None if sampler is None else sampler.peak_idle,
        busy_fraction=busy / (workers * wall), wall_s=wall)


def fresh_database(port: int, name: str) -> str:
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"


def set_max_connections(server: Any, value: int) -> None:
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres",
                         autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET max_connections = {int(value)}")
    server.pause()
    server.resume()


def run_postgres(server: Any, workers: int, points: list[BenchPoint], seed: int, settings: Settings) -> Figures:
    database = f"bench_{workers}_{seed}"
    url = fresh_database(server.port, database)
    dsn = f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres"
    with tempfile.TemporaryDirectory(prefix="mhmoe-qs-") as tmp:
        return run_workers(url, workers, points, Path(tmp), seed=seed, settings=settings,
                           sampler=ConnectionSampler(dsn, database))


def run_sqlite(workers: int, points: list[BenchPoint], seed: int, settings: Settings) -> Figures:
    with tempfile.TemporaryDirectory(prefix="mhmoe-qs-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'optuna.db'}"
        return run_workers(url, workers, points, Path(tmp), seed=seed, settings=settings, backend="sqlite")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="*", default=[16, 64, 128])
    parser.add_argument("--sqlite", type=int, nargs="*", default=[8], help="SQLite worker counts")
    parser.add_argument("--points", type=int, default=None, help="points per run (default: 4 per worker)")
    parser.add_argument("--trial-seconds", type=float, nargs=2, default=list(Settings.trial_s))
    parser.add_argument("--ramp", type=float, default=Settings.ramp_s, help="seconds over which workers start")
    parser.add_argument("--max-connections", type=int, default=None,
                        help="server max_connections (default: max(100, 2 per worker + 20))")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.pg_server import PgServer

    settings = Settings(trial_s=(args.trial_seconds[0], args.trial_seconds[1]), ramp_s=args.ramp)
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; trial bodies {settings.trial_s} s, heartbeat "
          f"{settings.heartbeat_s} s, grace {settings.grace_s} s, start ramp {settings.ramp_s:g} s; seed {args.seed}",
          flush=True)
    if args.workers:
        with PgServer.start() as server:
            for workers in args.workers:
                points = make_points(args.points or 4 * workers)
                limit = args.max_connections or max(100, 2 * workers + 20)
                set_max_connections(server, limit)
                # the reaper waits out a grace period after a server (re)start: let it pass, as on a long-lived server
                time.sleep(settings.grace_s + 8 + 1)
                figures = run_postgres(server, workers, points, args.seed, settings)
                print(f"{figures.line()}  [max_connections {limit}]", flush=True)
    for workers in args.sqlite:
        figures = run_sqlite(workers, make_points(args.points or 4 * workers), args.seed, settings)
        print(figures.line(), flush=True)


if __name__ == "__main__":
    main()
