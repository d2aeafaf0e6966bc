"""Soak: the smoke grid under 10 SIGKILLs of its workers at seeded random moments (slow).

Two independent worker processes train the shipped smoke grid; every few seconds one of them is
SIGKILLed (mid-trial, mid-checkpoint, mid-claim: wherever it is) and a fresh worker takes its
place, as a cluster scheduler would requeue it. Afterwards every point must be COMPLETE exactly
once with exactly one FINISHED MLflow run, no run left RUNNING, and every attempt that followed a
kill must have resumed past step 0 whenever its point had a checkpoint at the moment of the kill.

The spec is the shipped smoke spec with three changes a long unattended run would make: enough
retries that 10 kills cannot exhaust a point (a kill counts as an attempt), a 2 s / 8 s heartbeat
so a killed worker's trial comes back within seconds, and a checkpoint every 50 steps.
The PostgreSQL variant interleaves 5 kills with 3 restarts of the sweep database (down 3-15 s, past the
grace period half the time): an outage must cost no attempt, no worker and no traceback.
Run: ``.venv/bin/python -m pytest -m slow tests/sweep/test_soak.py -s`` (prints the figures).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from optuna.trial import TrialState

from mhmoe.sweep.checkpoints import point_checkpoint_dir
from mhmoe.sweep.queue import SweepQueue
from mhmoe.sweep.spec import spec_path
from mhmoe.tracking import names
from mhmoe.training.checkpoint_files import LAST, PREVIOUS
from tests.pg_server import PgServer, fresh_database, missing_binaries
from tests.sweep.conftest import REPO, sweep_cli

KILLS = 10
SEED = 0


def _soak_spec(tmp_path: Path) -> Path:
    data = yaml.safe_load(spec_path("smoke").read_text())
    data.update(name="soak", retries=KILLS, heartbeat={"interval": 2, "grace": 8})
    data["base"]["overrides"]["train.checkpoint_every"] = 50
    path = tmp_path / "soak.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_smoke_grid_survives_ten_sigkills(warm_data, tmp_path: Path, stores: dict[str, str]) -> None:
    _soak(tmp_path, stores, kills=KILLS)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_smoke_grid_on_postgres_survives_kills_and_database_restarts(warm_data, tmp_path: Path,
                                                                     stores: dict[str, str]) -> None:
    """Kills and restarts of the sweep database interleaved: an outage costs no attempt and no worker."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"PostgreSQL server binaries not on PATH: {missing}")
    with PgServer.start() as server:
        stores = {**stores, "storage": fresh_database(server, "soak")}
        _soak(tmp_path, stores, kills=KILLS // 2, server=server, restarts=3)


def _soak(tmp_path: Path, stores: dict[str, str], *, kills: int, server: PgServer | None = None,
          restarts: int = 0) -> None:
    """Run the soak grid under ``kills`` SIGKILLs and ``restarts`` database restarts at seeded moments."""
    spec = _soak_spec(tmp_path)
    sweep_cli("submit", str(spec), "--storage", stores["storage"], "--tracking-uri", stores["tracking"])
    queue = SweepQueue(stores["storage"], "soak")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(n: int) -> subprocess.Popen:
        out = open(logs / f"worker-{n}.log", "w")  # noqa: SIM115 - the child owns it
        return subprocess.Popen(
            [sys.executable, "-m", "mhmoe.sweep.worker", "--storage", stores["storage"], "--study", "soak",
             "--tracking-uri", stores["tracking"], "--checkpoint-root", stores["checkpoints"], "--threads", "1",
             "--poll", "1"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)

    rng = random.Random(SEED)
    started = 0
    workers = []
    for _ in range(2):
        workers.append(start(started))
        started += 1
    killed: list[dict] = []
    outages: list[float] = []
    begin = time.monotonic()
    while (len(killed) < kills or len(outages) < restarts) and queue.pending() != (0, 0):
        time.sleep(rng.uniform(1.0, 6.0))
        if len(outages) < restarts and (len(killed) >= kills or rng.random() < 0.4):
            down_s = rng.uniform(3.0, 15.0)  # past the 8 s grace period half the time
            assert server is not None
            server.pause()
            time.sleep(down_s)
            server.resume()
            outages.append(round(down_s, 1))
            continue
        if len(killed) >= kills:
            continue
        # Kill mid-trial: only a worker that holds a RUNNING trial (not one still importing).
        owners = {t.user_attrs.get("worker", "").rsplit(":", 1)[-1]: t for t in queue.trials((TrialState.RUNNING,))}
        candidates = [w for w in workers if w.poll() is None and str(w.pid) in owners]
        if not candidates:
            continue
        victim = rng.choice(candidates)
        trial = owners[str(victim.pid)]
        folder = point_checkpoint_dir(queue, Path(stores["checkpoints"]), trial.user_attrs["config_hash"])
        had_checkpoint = any((folder / name).is_file() for name in (LAST, PREVIOUS))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed.append({"at_s": round(time.monotonic() - begin, 1), "trials": {trial.number: had_checkpoint}})
        workers.remove(victim)
        workers.append(start(started))
        started += 1
    for worker in workers:
        assert worker.wait(timeout=900) == 0, (logs / "worker-0.log").read_text()[-3000:]

    trials = queue.trials()
    by_point: dict[str, list] = {}
    for trial in trials:
        by_point.setdefault(trial.user_attrs["config_hash"], []).append(trial)
    assert len(by_point) == 8
    complete = {h: [t for t in attempts if t.state == TrialState.COMPLETE] for h, attempts in by_point.items()}
    lost = [h for h, done in complete.items() if not done]
    duplicated = [h for h, done in complete.items() if len(done) > 1]

    # Every attempt that followed a killed one: resumed past step 0 if a checkpoint existed then.
    by_number = {t.number: t for t in trials}
    resumed, restarted, violations = 0, 0, []
    for kill in killed:
        for number, had_checkpoint in kill["trials"].items():
            follow = [t for t in trials if t.user_attrs.get("previous_trial") == number]
            if not follow or "start_step" not in follow[0].user_attrs:
                continue  # its next attempt was itself killed before it reported
            start_step = follow[0].user_attrs["start_step"]
            resumed += start_step > 0
            restarted += start_step == 0
            if had_checkpoint and start_step == 0:
                violations.append((number, by_number[number].user_attrs["point"]))

    client = mlflow.MlflowClient(stores["tracking"])
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    children = client.search_runs(experiment_ids, f"tags.`{names.TAG_SWEEP}` = 'soak' and "
                                                  f"tags.`{names.TAG_ROLE}` = '{names.ROLE_TRIAL}'")
    finished = [r for r in children if r.info.status == "FINISHED"]
    running_runs = [r for r in children if r.info.status == "RUNNING"]
    tracebacks = [p.name for p in sorted(logs.iterdir()) if "Traceback" in p.read_text()]
    print(f"\nsoak: {len(killed)} kills and {len(outages)} database restarts (down {outages} s) in "
          f"{time.monotonic() - begin:.0f} s, {len(trials)} attempts for 8 points; "
          f"lost {len(lost)}, duplicated {len(duplicated)}, resumed past step 0 {resumed}, restarted at 0 {restarted} "
          f"(checkpoint existed but restarted: {len(violations)}); MLflow: {len(finished)} FINISHED, "
          f"{len(running_runs)} RUNNING")
    assert len(killed) == kills and len(outages) == restarts, f"the sweep finished after {killed} / {outages}"
    assert len(trials) <= 8 + kills  # at most one new attempt per kill; an outage costs none
    assert not tracebacks
    assert not lost and not duplicated
    assert not violations
    assert sorted(r.data.tags[names.TAG_CONFIG_HASH] for r in finished) == sorted(by_point)
    assert not running_runs
