"""The Optuna queue on real storage: idempotent submit, atomic claims across processes, stale
trials re-queued with their MLflow run id, failed points retried (unlike GridSampler)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from mhmoe.commands.sweep import main as sweep_main
from mhmoe.sweep import expand, load_spec
from mhmoe.sweep.queue import SweepQueue
from mhmoe.sweep.status import active_workers, eta_seconds
from mhmoe.sweep.submit import submit_sweep
from tests.pg_server import fresh_database
from tests.sweep.conftest import REPO, debug_spec


def _submit(path: Path, storage: str, tracking: str, **kwargs):
    spec = load_spec(path)
    return submit_sweep(spec, expand(spec), storage=storage, tracking_uri=tracking, **kwargs)


def test_resubmit_enqueues_nothing_and_a_new_seed_only_its_points(tmp_path: Path, stores: dict[str, str],
                                                                    capsys: pytest.CaptureFixture) -> None:
    path = debug_spec(tmp_path / "s.yaml", name="resubmit", grid={"seed": [0]})
    args = ["submit", str(path), "--storage", stores["storage"], "--tracking-uri", stores["tracking"]]
    assert sweep_main(args) == 0
    assert "enqueued 2 new point(s), 0 already" in capsys.readouterr().out
    assert sweep_main(args) == 0
    assert "enqueued 0 new point(s), 2 already" in capsys.readouterr().out

    data = yaml.safe_load(path.read_text())
    data["grid"]["seed"] = [0, 1]
    path.write_text(yaml.safe_dump(data))
    assert sweep_main(args) == 0
    assert "enqueued 2 new point(s), 2 already" in capsys.readouterr().out

    trials = SweepQueue(stores["storage"], "resubmit").trials()
    hashes = [t.user_attrs["config_hash"] for t in trials]
    assert len(trials) == 4 and len(set(hashes)) == 4
    assert {t.user_attrs["seed"] for t in trials} == {0, 1}
    assert all(t.state == TrialState.WAITING for t in trials)
    assert all("overrides" in t.user_attrs and "config" in t.user_attrs for t in trials)
    assert not Path(stores["tracking"][len("sqlite:///"):]).exists()  # submit touches no MLflow store


CLAIMER = """
import contextlib, json, os, pathlib, sys, time
import mhmoe.sweep.queue
if sys.argv[3] == "no-lock":  # what a queue without the lock would do
    mhmoe.sweep.queue.queue_lock = lambda *args: contextlib.nullcontext()
queue = mhmoe.sweep.queue.SweepQueue(sys.argv[1], sys.argv[2])
barrier = pathlib.Path(sys.argv[4])  # all start claiming at once
(barrier / str(os.getpid())).touch()
while len(list(barrier.iterdir())) < int(sys.argv[5]):
    time.sleep(0.01)
claimed = []
while (trial := queue.claim()) is not None:
    claimed.append(trial.number)
    time.sleep(0.01)  # a worker trains between claims; without it one process can hog the lock
print(json.dumps(claimed))
"""


def _claim_race(url: str, study: str, *, lock: bool = True, n_trials: int = 40,
                n_processes: int = 4) -> list[list[int]]:
    """N processes claim from one queue of WAITING trials until it is empty; what each one got."""
    queue = SweepQueue(url, study, create=True)
    for i in range(n_trials):
        queue.study.enqueue_trial({}, user_attrs={"config_hash": f"h{i}", "point": f"p{i}"})
    barrier = Path(tempfile.mkdtemp(prefix="claim-barrier-"))
    mode = "lock" if lock else "no-lock"
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, url, study, mode, str(barrier), str(n_processes)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(n_processes)]
    claimed = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    shutil.rmtree(barrier, ignore_errors=True)
    assert all(p.returncode == 0 for p in procs)
    return claimed


def _assert_claimed_once(claimed: list[list[int]], n_trials: int = 40) -> None:
    # Every trial claimed by exactly one process: the race measured with Optuna 5 (two workers popping
    # the same WAITING trial on SQLite) cannot happen under the queue lock.
    assert sorted(n for numbers in claimed for n in numbers) == list(range(n_trials))
    assert sum(1 for numbers in claimed if numbers) >= 2, "the processes did not actually compete"


def test_concurrent_claims_on_sqlite_never_hand_out_a_trial_twice(stores: dict[str, str]) -> None:
    _assert_claimed_once(_claim_race(stores["storage"], "race"))
    assert all(t.state == TrialState.RUNNING for t in SweepQueue(stores["storage"], "race").trials())


@pytest.mark.postgres
def test_concurrent_claims_on_postgres_never_hand_out_a_trial_twice(postgres_server) -> None:
    _assert_claimed_once(_claim_race(fresh_database(postgres_server, "claim_race"), "race"))


@pytest.mark.slow
def test_without_the_lock_sqlite_hands_out_trials_twice(tmp_path: Path) -> None:
    """Why the lock exists: Optuna's WAITING -> RUNNING swap alone double-claims on SQLite.

    A race, so it may take a few rounds to show (3 of 3 rounds showed it when written).
    """
    for round_ in range(5):
        claimed = _claim_race(f"sqlite:///{tmp_path / f'nolock{round_}.db'}", "race", lock=False)
        flat = [n for numbers in claimed for n in numbers]
        if len(flat) > len(set(flat)):
            return
    pytest.fail("5 rounds without a double claim; the race did not show on this machine")


def test_stale_trial_is_failed_and_requeued_with_its_mlflow_run(tmp_path: Path, stores: dict[str, str]) -> None:
    path = debug_spec(tmp_path / "s.yaml", name="stale", groups={"smoe": {"model.ffn": "smoe"}})
    _submit(path, stores["storage"], stores["tracking"])
    dead = SweepQueue(stores["storage"], "stale", heartbeat_interval=1, grace_period=2)
    first = dead.claim()
    dead.set_attrs(first, {"mlflow_run_id": "run-abc"})
    # The "worker" dies: no more heartbeats. Another worker's claim reaps it after the grace period.
    assert SweepQueue(stores["storage"], "stale", heartbeat_interval=1, grace_period=2).claim() is None
    time.sleep(3.5)
    alive = SweepQueue(stores["storage"], "stale", heartbeat_interval=1, grace_period=2)
    second = alive.claim()
    assert second is not None and second.number != first.number
    assert second.user_attrs["config_hash"] == first.user_attrs["config_hash"]
    assert second.user_attrs["attempt"] == 2 and second.user_attrs["mlflow_run_id"] == "run-abc"
    reaped = alive.storage.get_trial(first._trial_id)
    assert reaped.state == TrialState.FAIL and second.user_attrs["previous_error"].startswith("stale")
    # The dead worker coming back cannot report over its retry.
    assert dead.complete(first, 1.0, {}) is False


def test_failed_points_are_retried_then_reported_failed(tmp_path: Path, stores: dict[str, str]) -> None:
    path = debug_spec(tmp_path / "s.yaml", name="retry", groups={"smoe": {"model.ffn": "smoe"}})  # retries: 1
    queue, _ = _submit(path, stores["storage"], stores["tracking"])
    assert queue.fail(queue.claim(), "boom") == "retried"  # attempt 1 -> attempt 2 enqueued
    second = queue.claim()
    assert second.user_attrs["attempt"] == 2
    assert queue.fail(second, "boom again") == "failed"  # no attempts left
    assert queue.fail(second, "told twice") == "lost"  # no longer RUNNING: nothing written
    assert queue.storage.get_trial(second._trial_id).user_attrs["failure_reason"] == "boom again"
    assert queue.claim() is None
    assert [p.state for p in queue.point_states()] == ["failed"]  # GridSampler would call this point done

    _, result = _submit(path, stores["storage"], stores["tracking"])
    assert result.added == () and result.requeued == ()
    _, result = _submit(path, stores["storage"], stores["tracking"], retry_failed=True)
    assert len(result.requeued) == 1
    third = queue.claim()
    assert third.user_attrs["attempt"] == 3
    queue.complete(third, 12.5, {"final_step": 20})
    assert [p.state for p in queue.point_states()] == ["done"]


def test_status_counts_and_eta(tmp_path: Path, stores: dict[str, str], capsys: pytest.CaptureFixture) -> None:
    path = debug_spec(tmp_path / "s.yaml", name="status", grid={"seed": [0, 1]})
    queue, _ = _submit(path, stores["storage"], stores["tracking"])
    done = queue.claim()
    assert sweep_main(["status", str(path), "--storage", stores["storage"]]) == 0
    assert "ETA unknown" in capsys.readouterr().out  # nothing validated yet
    # A worker's per-validation report (mhmoe.sweep.progress): step 10 of 20 with the metric's value.
    queue.storage.set_trial_intermediate_value(done._trial_id, 10, 33.25)
    time.sleep(0.2)  # elapsed time for the rate
    assert sweep_main(["status", str(path), "--storage", stores["storage"]]) == 0
    out = capsys.readouterr().out
    assert "ETA unknown" not in out  # from the running trial's rate, before any trial finished
    header, _, row = out.splitlines()[2:5]
    assert header.split()[4] == "val/shakespeare/ppl" and "eta" in header.split()  # the value column names the metric
    assert row.split()[3:6] == ["RUNNING", "33.25", "10/20"]
    queue.complete(done, 10.0, {"start_step": 0, "final_step": 20})
    queue.claim()
    assert sweep_main(["status", str(path), "--storage", stores["storage"]]) == 0
    out = capsys.readouterr().out
    assert "4 points: 1 done, 1 running, 2 waiting, 0 failed; ETA" in out
    assert "COMPLETE" in out and "0->20" in out
    assert sweep_main(["status", "--study", "nope", "--storage", stores["storage"]]) == 2  # names no study


def _trial(number: int, state: TrialState, group: str, steps: int, seconds: float | None = None) -> FrozenTrial:
    """A real Optuna trial record; ``seconds``: started at 2026-01-01 (and finished that long after, if COMPLETE)."""
    start = datetime(2026, 1, 1) if seconds is not None else None
    done = state == TrialState.COMPLETE
    attrs = {"group": group, "config": {"train": {"max_steps": steps}}}
    if done:
        attrs |= {"start_step": 0, "final_step": steps}
    return FrozenTrial(number=number, trial_id=number, state=state, value=1.0 if done else None, values=None,
                       datetime_start=start, datetime_complete=start + timedelta(seconds=seconds) if done else None,
                       params={}, distributions={}, user_attrs=attrs, system_attrs={}, intermediate_values={})


def test_eta_scales_waiting_trials_by_their_steps_and_their_groups_step_cost() -> None:
    # A ladder's first rung is done (100 steps: dense 10 s, MH-MoE 20 s); its 10x rung waits.
    done = [_trial(0, TrialState.COMPLETE, "dense", 100, 10.0), _trial(1, TrialState.COMPLETE, "mhmoe", 100, 20.0)]
    waiting = [_trial(2, TrialState.WAITING, "dense", 1000), _trial(3, TrialState.WAITING, "mhmoe", 1000),
               _trial(4, TrialState.WAITING, "smoe", 1000)]  # no smoe trial finished: the all-group rate
    running = [_trial(5, TrialState.RUNNING, "dense", 100, 0.0), _trial(6, TrialState.RUNNING, "mhmoe", 100, 0.0)]
    for trial in running:
        trial.intermediate_values = {50: 40.0}  # half way after 10 s: 10 s left each
    eta = eta_seconds(done + running + waiting, waiting, running=2, now=datetime(2026, 1, 1, 0, 0, 10))
    assert eta == pytest.approx((10 + 10 + 1000 * 0.1 + 1000 * 0.2 + 1000 * 0.15) / 2)
    assert eta_seconds(done, [], running=0) == 0.0


def _scheduled(number: int, worker: str, start_s: float, seconds: float, now_s: float) -> FrozenTrial:
    """Trial ``number`` of a simulated schedule as the study holds it at ``now_s`` (10 steps per trial)."""
    t0 = datetime(2026, 1, 1)
    if start_s >= now_s:
        return _trial(number, TrialState.WAITING, "g", 10)
    state = TrialState.COMPLETE if start_s + seconds <= now_s else TrialState.RUNNING
    trial = _trial(number, state, "g", 10, seconds)
    trial.datetime_start = t0 + timedelta(seconds=start_s)
    trial.datetime_complete = t0 + timedelta(seconds=start_s + seconds) if state == TrialState.COMPLETE else None
    trial.user_attrs["worker"] = worker
    if state == TrialState.RUNNING:
        step = int(10 * (now_s - start_s) / seconds)
        trial.intermediate_values = {step: 1.0} if step else {}
    return trial


def test_eta_counts_a_worker_between_trials_and_matches_a_simulated_schedule() -> None:
    # Two workers, eight 10 s trials; worker B starts 5 s after A. Every trial end is a moment a worker
    # prints the ETA; the true time left is known from the schedule.
    starts = {0: ("A", 0), 1: ("B", 5), 2: ("A", 10), 3: ("B", 15), 4: ("A", 20), 5: ("B", 25), 6: ("A", 30),
              7: ("B", 35)}
    end = max(start + 10 for _, start in starts.values())
    errors = []
    for now_s in (10.0, 15.0, 20.0, 25.0, 30.0):
        trials = [_scheduled(n, worker, start, 10.0, now_s) for n, (worker, start) in starts.items()]
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        running = sum(t.state == TrialState.RUNNING for t in trials)
        assert running == 1  # the other worker just ended its trial: "trials running" says one worker
        eta = eta_seconds(trials, waiting, running, now=datetime(2026, 1, 1) + timedelta(seconds=now_s))
        errors.append(eta / (end - now_s))
        assert active_workers(trials, datetime(2026, 1, 1) + timedelta(seconds=now_s)) == 2
    assert all(0.8 <= ratio <= 1.2 for ratio in errors), errors
    # Dividing by the trials running at print time (the old rule) is about 2x too long here.
    trials = [_scheduled(n, worker, start, 10.0, 10.0) for n, (worker, start) in starts.items()]
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert eta_seconds(trials, waiting, 1, now=datetime(2026, 1, 1, 0, 0, 10), workers=1) / (end - 10) > 1.6
