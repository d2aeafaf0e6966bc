"""The queue with many worker processes on PostgreSQL: connections held per worker, nothing lost or doubled.

Runs the core of ``benchmarks/queue_scale.py`` small: 8 real worker processes through the real claim /
heartbeat / complete / reap code, trial bodies that sleep, one worker SIGKILLed mid-trial and replaced.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tests.pg_server import fresh_database

REPO = Path(__file__).resolve().parents[2]
WORKERS = 8


def _benchmark():
    spec = importlib.util.spec_from_file_location("queue_scale", REPO / "benchmarks" / "queue_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["queue_scale"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_eight_workers_hold_one_connection_each_between_calls_and_lose_nothing(postgres_server, tmp_path) -> None:
    bench = _benchmark()
    database = "queue_scale"
    url = fresh_database(postgres_server, database)
    sampler = bench.ConnectionSampler(f"host=127.0.0.1 port={postgres_server.port} user=postgres dbname=postgres",
                                      database, every_s=0.02)
    settings = bench.Settings(trial_s=(0.5, 1.5), heartbeat_s=1, grace_s=3, poll_s=0.5, ramp_s=0.5)
    figures = bench.run_workers(url, WORKERS, bench.make_points(24), tmp_path, seed=1, sampler=sampler,
                                settings=settings)
    assert (figures.lost, figures.duplicated, figures.died) == (0, 0, 0), figures
    assert figures.killed == 1, figures
    # One pooled connection per worker between calls (+1: a killed worker's, until the server notices); a
    # claim or a heartbeat opens one more for its duration.
    assert figures.peak_idle <= WORKERS + 1, figures
    assert figures.peak_connections <= 2 * WORKERS, figures
