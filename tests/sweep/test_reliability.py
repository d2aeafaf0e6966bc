"""Faults injected into real sweeps: nothing lost, nothing trained twice, every failure says why.

Real training, real Optuna SQLite storage, real MLflow stores; the fenced-worker and worker-death
cases run the worker as a real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import mlflow
from optuna.trial import TrialState

from mhmoe.config.run import RunConfig
from mhmoe.sweep import expand, load_spec, tracking as sweep_tracking
from mhmoe.sweep.checkpoints import point_checkpoint_dir
from mhmoe.sweep.queue import STALE_REASON, SweepQueue
from mhmoe.sweep.status import format_status, sweep_status
from mhmoe.sweep.submit import submit_sweep
from mhmoe.sweep.worker import WorkerOptions, close_reaped, run_worker
from mhmoe.tracking.names import TAG_FAILURE, TAG_RESTART
from mhmoe.training.checkpoint_files import LAST, PREVIOUS
from mhmoe.training.request import TrainRequest
from mhmoe.training.runner import train
from tests.sweep.conftest import REPO, debug_spec, wait_for


def _submit(path: Path, stores: dict[str, str]) -> SweepQueue:
    spec = load_spec(path)
    queue, _ = submit_sweep(spec, expand(spec), storage=stores["storage"], tracking_uri=stores["tracking"])
    return SweepQueue.with_heartbeats(stores["storage"], spec.name)


def _options(stores: dict[str, str], study: str) -> WorkerOptions:
    return WorkerOptions(storage=stores["storage"], study=study, tracking_uri=stores["tracking"],
                         checkpoint_root=Path(stores["checkpoints"]), linger=False, poll_s=0.5)


def _attempts(queue: SweepQueue, point: str) -> list:
    return [t for t in queue.trials() if t.user_attrs["point"].startswith(point)]



def test_diverging_point_fails_once_with_its_reason_and_the_rest_finish(warm_data, tmp_path: Path,
                                                                          stores: dict[str, str]) -> None:
    path = debug_spec(tmp_path / "div.yaml", name="div", steps=12, overrides={"train.log_every": 2},
                      groups={"smoe": {"model.ffn": "smoe"}, "hot": {"model.ffn": "smoe", "optim.lr": 1e3}})
    queue = _submit(path, stores)
    assert run_worker(_options(stores, "div")) == 1  # a point failed for good: not a clean exit

    (good,) = _attempts(queue, "smoe")
    (hot,) = _attempts(queue, "hot")  # one attempt only: a divergence is not retried
    assert good.state == TrialState.COMPLETE
    assert hot.state == TrialState.FAIL
    reason = hot.user_attrs["failure_reason"]
    assert reason.startswith("diverged: train/") and reason.endswith(f"at step {int(reason.split()[-1])}")
    assert int(reason.split()[-1]) < 12
    run = mlflow.MlflowClient(stores["tracking"]).get_run(hot.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags[TAG_FAILURE] == reason

    text = format_status("div", sweep_status(queue))
    assert "2 points: 1 done, 0 running, 0 waiting, 1 failed" in text
    assert reason[:60] in text


def test_unusable_checkpoints_restart_the_point_from_zero_with_the_reason(warm_data, tmp_path: Path,
                                                                           stores: dict[str, str]) -> None:
    path = debug_spec(tmp_path / "bad.yaml", name="badckpt", steps=20, groups={"smoe": {"model.ffn": "smoe"}},
                      overrides={"train.checkpoint_every": 5})
    queue = _submit(path, stores)
    # Attempt 1 trains to step 10 (checkpoints at 5 and 10), then its worker dies.
    trial = queue.claim()
    folder = point_checkpoint_dir(queue, Path(stores["checkpoints"]), trial.user_attrs["config_hash"])
    first_run = sweep_tracking.create_trial_run(stores["tracking"], "badckpt", None, "smoe",
                                                sweep_tracking.trial_tags("badckpt", trial.number, trial.user_attrs))
    queue.set_attrs(trial, {"mlflow_run_id": first_run})
    train(TrainRequest(config=RunConfig.from_dict(trial.user_attrs["config"]), tracking_uri=stores["tracking"],
                       run_id=first_run, checkpoint_dir=folder, progress=False, stop_after=10))
    assert queue.fail(trial, "worker died") == "retried"
    # The disk then damages both checkpoints.
    for name in (LAST, PREVIOUS):
        data = bytearray((folder / name).read_bytes())
        data[len(data) // 2: len(data) // 2 + 4096] = bytes(4096)
        (folder / name).write_bytes(bytes(data))

    assert run_worker(_options(stores, "badckpt")) == 0
    retried = _attempts(queue, "smoe")[-1]
    assert retried.state == TrialState.COMPLETE
    assert retried.user_attrs["start_step"] == 0 and retried.user_attrs["final_step"] == 20
    restart = retried.user_attrs["restart_reason"]
    assert restart.startswith("no usable checkpoint, restarted from step 0") and LAST in restart and PREVIOUS in restart
    assert {p.name for p in folder.glob("*.unusable")} == {f"{LAST}.unusable", f"{PREVIOUS}.unusable"}
    client = mlflow.MlflowClient(stores["tracking"])
    new_run = client.get_run(retried.user_attrs["mlflow_run_id"])
    assert new_run.info.status == "FINISHED" and new_run.data.tags[TAG_RESTART].startswith("no usable checkpoint")
    assert client.get_run(first_run).info.lifecycle_stage == "deleted"


def test_exhausted_stale_point_closes_its_mlflow_run_with_the_reason(tmp_path: Path, stores: dict[str, str]) -> None:
    path = debug_spec(tmp_path / "s.yaml", name="orphan", groups={"smoe": {"model.ffn": "smoe"}}, retries=0,
                      heartbeat={"interval": 1, "grace": 3})
    queue = _submit(path, stores)
    trial = queue.claim()
    run_id = sweep_tracking.create_trial_run(stores["tracking"], "orphan", None, "smoe",
                                             sweep_tracking.trial_tags("orphan", trial.number, trial.user_attrs))
    queue.set_attrs(trial, {"mlflow_run_id": run_id})
    # Its worker dies: no more heartbeats. Before anyone reaps, status already calls it stale.
    wait_for(lambda: queue.stale_trial_ids(), 10, "the trial to go stale")
    status = sweep_status(queue)
    assert status.stale == 1 and any(r["state"] == "STALE" for r in status.rows)
    assert "1 running (1 stale" in format_status("orphan", status)

    close_reaped(queue, _options(stores, "orphan"))
    reaped = queue.storage.get_trial(trial._trial_id)
    assert reaped.state == TrialState.FAIL and reaped.user_attrs["failure_reason"] == STALE_REASON
    run = mlflow.MlflowClient(stores["tracking"]).get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags[TAG_FAILURE] == STALE_REASON
    assert [p.state for p in queue.point_states()] == ["failed"]


def test_a_worker_that_lost_its_claim_stops_and_writes_nothing(warm_data, tmp_path: Path,
                                                               stores: dict[str, str]) -> None:
    path = debug_spec(tmp_path / "f.yaml", name="fence", steps=120, groups={"smoe": {"model.ffn": "smoe"}},
                      overrides={"train.checkpoint_every": 4, "train.val_every": 120})
    queue = _submit(path, stores)
    point_hash = queue.trials()[0].user_attrs["config_hash"]
    last = point_checkpoint_dir(queue, Path(stores["checkpoints"]), point_hash) / LAST
    log = tmp_path / "worker-a.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        worker_a = subprocess.Popen(
            [sys.executable, "-m", "mhmoe.sweep.worker", "--storage", stores["storage"], "--study", "fence",
             "--tracking-uri", stores["tracking"], "--checkpoint-root", stores["checkpoints"], "--max-trials", "1"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(last.is_file, 180, "worker A's first checkpoint")
            (trial_a,) = queue.trials((TrialState.RUNNING,))
            # What a reaper does when it wrongly judges A dead: fail A's attempt and re-queue the point.
            assert queue.fail(trial_a, "reaped by the test while its worker was alive") == "retried"
            time.sleep(1.0)  # a save that passed its fence check just before may still land
            written = last.stat().st_mtime_ns
            assert worker_a.wait(timeout=60) == 0
        finally:
            worker_a.kill()
    assert "lost claim" in log.read_text()
    assert last.stat().st_mtime_ns == written, "worker A wrote a checkpoint after losing its claim"
    client = mlflow.MlflowClient(stores["tracking"])
    run_id = trial_a.user_attrs["mlflow_run_id"]
    assert client.get_run(run_id).info.status == "RUNNING"  # A did not close the run the new owner will use
    assert queue.storage.get_trial(trial_a._trial_id).user_attrs["failure_reason"].startswith("reaped by the test")

    # The new owner resumes A's last checkpoint in the same run and finishes it.
    assert run_worker(_options(stores, "fence")) == 0
    attempts = _attempts(queue, "smoe")
    assert [t.state for t in attempts] == [TrialState.FAIL, TrialState.COMPLETE]
    assert attempts[1].user_attrs["start_step"] > 0 and attempts[1].user_attrs["mlflow_run_id"] == run_id
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_worker_that_dies_leaves_its_traceback_in_its_log(tmp_path: Path, stores: dict[str, str]) -> None:
    path = debug_spec(tmp_path / "d.yaml", name="dies", groups={"smoe": {"model.ffn": "smoe"}})
    _submit(path, stores)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    logs = tmp_path / "logs"
    result = subprocess.run(
        [sys.executable, "-m", "mhmoe.cli", "sweep", "work", str(path), "--storage", stores["storage"],
         "--tracking-uri", "http://127.0.0.1:9", "--cpu-workers", "1", "--log-dir", str(logs), "--no-linger"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    text = (logs / "worker-cpu0.log").read_text()
    assert "Traceback (most recent call last)" in text and "127.0.0.1:9" in text
    assert "worker cpu0 exited with code 1" in result.stderr and str(logs / "worker-cpu0.log") in result.stderr


def test_two_submits_of_one_spec_on_a_fresh_store_both_succeed(tmp_path: Path, stores: dict[str, str]) -> None:
    path = debug_spec(tmp_path / "c.yaml", name="twice", grid={"seed": [0, 1]})
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "mhmoe.cli", "sweep", "submit", str(path), "--storage", stores["storage"],
           "--tracking-uri", stores["tracking"]]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = SweepQueue(stores["storage"], "twice").trials()
    assert len(trials) == 4 and len({t.user_attrs["config_hash"] for t in trials}) == 4


def test_a_full_disk_fails_the_attempt_with_its_reason_and_the_retry_waits(warm_data, tiny_disk: Path, tmp_path: Path,
                                                                         stores: dict[str, str]) -> None:
    """Checkpoints on a real 1 MB file system: the first save fails. The reason names the full disk in
    Optuna, MLflow and `sweep status`, and no worker claims the retry until its pause is over."""
    path = debug_spec(tmp_path / "full.yaml", name="full", steps=10, groups={"smoe": {"model.ffn": "smoe"}},
                      overrides={"train.val_every": 5})
    queue = _submit(path, stores)
    options = replace(_options(stores, "full"), checkpoint_root=tiny_disk, max_trials=1, disk_full_pause=3.0)
    failed_at = time.time()
    assert run_worker(options) == 0  # one trial, failed and re-queued (not failed for good)

    failed, retry = _attempts(queue, "smoe")
    reason = failed.user_attrs["failure_reason"]
    assert failed.state == TrialState.FAIL and reason.startswith(f"No space left on device: {tiny_disk}")
    assert reason.endswith(" MB free)")
    run = mlflow.MlflowClient(stores["tracking"]).get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags[TAG_FAILURE] == reason
    assert reason[:40] in format_status("full", sweep_status(queue))
    assert not [p for p in tiny_disk.rglob("*") if p.is_file()]  # the partial checkpoint is gone

    assert retry.state == TrialState.WAITING and failed_at + 3 <= retry.user_attrs["not_before"] <= time.time() + 3
    assert queue.claim() is None  # paused: a second attempt now would hit the same full disk
    wait_for(lambda: time.time() > retry.user_attrs["not_before"], 10, "the pause to end")
    assert queue.claim().number == retry.number


def test_a_trial_that_never_beat_is_reaped_after_the_grace_period(tmp_path) -> None:
    """A worker killed between its claim's swap and its first heartbeat (SQLite claims them in two calls)
    leaves a RUNNING trial without a heartbeat: Optuna's reaper skips those; ours reaps it once its start is
    older than the grace period, and a fresh one stays."""
    from mhmoe.sweep.queue import SweepQueue

    url = f"sqlite:///{tmp_path / 'q.db'}"
    queue = SweepQueue(url, "q", create=True, heartbeat_interval=1, grace_period=2)
    for key in ("old", "new"):
        queue.study.enqueue_trial({}, user_attrs={"config_hash": key, "point": key, "attempt": 1, "max_attempt": 2})
    old, new = (t._trial_id for t in queue.study.trials)
    assert queue.storage.set_trial_state_values(old, TrialState.RUNNING)  # swapped, then killed: no heartbeat
    time.sleep(2.5)
    assert queue.storage.set_trial_state_values(new, TrialState.RUNNING)
    assert queue.stale_trial_ids() == {old}
    reaped = queue.reap()
    assert [t._trial_id for t, _ in reaped] == [old] and reaped[0][1]
    queue.close()
