"""A storage outage: the sweep database (a real PostgreSQL server on 127.0.0.1, started here) is shut down
and restarted under live queue clients and under a running sweep.

Each test starts its own server, because pausing one would break any other test that shares it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from optuna.trial import TrialState

from mhmoe.sweep import expand, load_spec, queue as queue_module
from mhmoe.sweep.outage import WINDOW_ENV, OutageWatch, StorageUnavailable
from mhmoe.sweep.queue import SweepQueue
from mhmoe.sweep.submit import submit_sweep
from mhmoe.sweep.worker import WorkerOptions, run_worker
from tests.pg_server import PgServer, fresh_database, missing_binaries
from tests.sweep.conftest import REPO, debug_spec, wait_for


@pytest.fixture
def own_server() -> Iterator[PgServer]:
    missing = missing_binaries()
    if missing:
        pytest.skip(f"PostgreSQL server binaries not on PATH: {missing} (Debian: apt-get install postgresql)")
    with PgServer.start() as server:
        yield server


def _resume_after(server: PgServer, seconds: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), server.resume()), daemon=True)
    thread.start()
    return thread


def _queue_with_one_point(tmp_path: Path, url: str, *, grace: int) -> SweepQueue:
    spec = load_spec(debug_spec(tmp_path / "o.yaml", name="outage", groups={"smoe": {"model.ffn": "smoe"}}))
    submit_sweep(spec, expand(spec), storage=url, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    return SweepQueue(url, "outage", heartbeat_interval=1, grace_period=grace)


def test_queue_calls_wait_out_a_restart_and_say_so(own_server: PgServer, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    queue = _queue_with_one_point(tmp_path, fresh_database(own_server, "calls"), grace=60)
    own_server.pause()
    resumed = _resume_after(own_server, 3.0)
    started = time.monotonic()
    trial = queue.claim()  # reap + advisory lock + claim, all against a server that is down for 3 s
    waited = time.monotonic() - started
    resumed.join()
    assert trial is not None and trial.state == TrialState.RUNNING
    assert waited >= 2.5
    err = capsys.readouterr().err
    assert "unreachable" in err and "retrying for up to" in err and "reachable again after" in err
    assert "Traceback" not in err


def test_no_trial_is_reaped_until_workers_had_a_grace_period_to_beat_again(own_server: PgServer, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    grace = 1
    monkeypatch.setattr(queue_module, "MAX_DELAY_S", 1.0)  # the backoff cap the guard waits out (8 s by default)
    queue = _queue_with_one_point(tmp_path, fresh_database(own_server, "reap"), grace=grace)
    trial = queue.claim()
    assert trial is not None
    own_server.pause()
    time.sleep(grace + 1)  # every heartbeat is now older than the grace period
    own_server.resume()
    assert queue.stale_trial_ids() == set()  # the restart, not a dead worker, silenced it
    time.sleep(grace + queue_module.MAX_DELAY_S + 0.5)  # no beat for a grace period + the longest backoff since

    assert queue.stale_trial_ids() == {trial._trial_id}


def test_an_outage_past_the_window_is_one_line_naming_the_database(own_server: PgServer, tmp_path: Path) -> None:
    url = fresh_database(own_server, "window")
    queue = _queue_with_one_point(tmp_path, url, grace=60)
    own_server.pause()
    try:
        queue.storage.outage = OutageWatch(url, window_s=1.0, log=lambda line: None)
        named = r"storage postgresql\+psycopg://postgres(:\*\*\*)?@127\.0\.0\.1:\d+/window unreachable for \d+ s"
        with pytest.raises(StorageUnavailable, match=named + r" \(\d+ tries\)"):
            queue.pending()
        env = {**os.environ, WINDOW_ENV: "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
        result = subprocess.run([sys.executable, "-m", "mhmoe.cli", "sweep", "status", "--study", "outage",
                                 "--storage", url], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    finally:
        own_server.resume()
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "retrying for up to" not in line]
    assert len(lines) == 1 and "/window unreachable for" in lines[0] and WINDOW_ENV in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # ~60 s: two real workers; the queue-level tests above are the default suite's
def test_a_database_restart_mid_sweep_costs_no_retry_and_no_worker(warm_data, own_server: PgServer,
                                                                    tmp_path: Path) -> None:
    url = fresh_database(own_server, "sweep")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = debug_spec(tmp_path / "restart.yaml", name="restart", steps=40, grid={"seed": [0, 1]},
                      overrides={"train.val_every": 5})
    spec = load_spec(path)
    submit_sweep(spec, expand(spec), storage=url, tracking_uri=tracking)
    queue = SweepQueue(url, "restart")
    env = {**os.environ, WINDOW_ENV: "120", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = (tmp_path / "workers.log").open("w")
    workers = subprocess.Popen(
        [sys.executable, "-m", "mhmoe.cli", "sweep", "work", "--study", "restart", "--storage", url,
         "--tracking-uri", tracking, "--checkpoint-root", str(tmp_path / "ckpt"), "--cpu-workers", "2",
         "--no-linger"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: queue.pending()[1] == 2, 120, "both workers training")
        own_server.pause()
        status = subprocess.Popen([sys.executable, "-m", "mhmoe.cli", "sweep", "status", "--study", "restart",
                                   "--storage", url, "--summary"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(8)  # longer than the grace period (4 s): every heartbeat goes stale on the server
        own_server.resume()
        status_out, status_err = status.communicate(timeout=120)
        assert workers.wait(timeout=300) == 0
    finally:
        if workers.poll() is None:
            workers.kill()
        log.close()
    output = (tmp_path / "workers.log").read_text()
    assert "unreachable" in output and "reachable again after" in output, output
    assert "Traceback" not in output, output
    assert status.returncode == 0 and "Traceback" not in status_err, status_err
    assert status_out.startswith("sweep restart: 4 points:"), status_out

    trials = SweepQueue(url, "restart").trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4  # one attempt each: nothing failed or reaped
    assert len({t.user_attrs["config_hash"] for t in trials}) == 4
    mlflow.set_tracking_uri(tracking)
    runs = mlflow.search_runs(experiment_names=["restart"], filter_string="tags.`mhmoe.role` = 'trial'")
    assert sorted(runs["status"]) == ["FINISHED"] * 4


def test_a_trial_cut_off_by_a_long_outage_is_requeued_with_the_reason_and_no_retry_used(
        warm_data, own_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    url = fresh_database(own_server, "long")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = debug_spec(tmp_path / "long.yaml", name="long", steps=80, groups={"smoe": {"model.ffn": "smoe"}},
                      retries=0, overrides={"train.checkpoint_every": 4, "train.val_every": 80})
    spec = load_spec(path)
    submit_sweep(spec, expand(spec), storage=url, tracking_uri=tracking)
    monkeypatch.setenv(WINDOW_ENV, "2")  # the outage (3 s) outlasts one window, not two
    options = WorkerOptions(storage=url, study="long", tracking_uri=tracking, checkpoint_root=tmp_path / "ckpt",
                            linger=False, poll_s=0.5)
    queue = SweepQueue(url, "long")
    first_checkpoint = threading.Event()

    def outage_once_training() -> None:
        wait_for(lambda: any((tmp_path / "ckpt").rglob("last.ckpt")), 120, "the first checkpoint")
        own_server.pause()
        time.sleep(3)
        own_server.resume()
        first_checkpoint.set()

    threading.Thread(target=outage_once_training, daemon=True).start()
    assert run_worker(options) == 0
    assert first_checkpoint.is_set()

    first, second = queue.trials()
    reason = first.user_attrs["failure_reason"]
    assert first.state == TrialState.FAIL and reason.startswith("StorageUnavailable: storage postgresql")
    assert "/long unreachable for" in reason
    # retries: 0, yet the point was tried again (the outage used no attempt), and resumed its checkpoint.
    assert second.state == TrialState.COMPLETE and second.user_attrs["start_step"] > 0
    assert second.user_attrs["max_attempt"] == 2
    out = capsys.readouterr().out
    assert "re-queued after the storage outage" in out and reason in out
    run = mlflow.MlflowClient(tracking).get_run(second.user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED"


def test_a_bad_retry_window_is_one_line_naming_the_variable() -> None:
    env = {**os.environ, WINDOW_ENV: "soon", "MLFLOW_DISABLE_TELEMETRY": "true"}
    result = subprocess.run([sys.executable, "-m", "mhmoe.cli", "sweep", "status", "--study", "x", "--storage",
                             "postgresql+psycopg://postgres@127.0.0.1:1/x"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{WINDOW_ENV}='soon' must be a number of seconds >= 0" in result.stderr
