"""Soak: the smoke grid under 10 SIGKILLs of its workers at seeded random moments (slow).

Two independent worker processes train the shipped smoke grid; every few seconds one of them is
SIGKILLed (mid-trial, mid-checkpoint, mid-claim: wherever it is) and a fresh worker takes its
place, as a cluster scheduler would requeue it. Afterwards every point must be COMPLETE exactly
once with exactly one FINISHED MLflow run, no run left RUNNING, and every attempt that followed a
kill must have resumed past step 0 whenever its point had a checkpoint at the moment of the kill.

The spec is the shipped smoke spec with three changes a long unattended run would make: enough
retries that 10 kills cannot exhaust a point (a kill counts as an attempt), a 2 s / 8 s heartbeat
so a killed worker's trial comes back within seconds, and a checkpoint every 50 steps.
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
def test_smoke_grid_survives_ten_sigkills(warm_data, tmp_path: Path, stores: dict[str, str]) -> None:
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
    kills: list[dict] = []
    begin = time.monotonic()
    while len(kills) < KILLS and queue.pending() != (0, 0):
        time.sleep(rng.uniform(1.0, 6.0))
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
        kills.append({"at_s": round(time.monotonic() - begin, 1), "trials": {trial.number: had_checkpoint}})
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
    for kill in kills:
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
    print(f"\nsoak: {len(kills)} kills in {time.monotonic() - begin:.0f} s, {len(trials)} attempts for 8 points; "
          f"lost {len(lost)}, duplicated {len(duplicated)}, resumed past step 0 {resumed}, restarted at 0 {restarted} "
          f"(checkpoint existed but restarted: {len(violations)}); MLflow: {len(finished)} FINISHED, "
          f"{len(running_runs)} RUNNING")
    assert len(kills) == KILLS, f"the sweep finished after {len(kills)} kills"
    assert not lost and not duplicated
    assert not violations
    assert sorted(r.data.tags[names.TAG_CONFIG_HASH] for r in finished) == sorted(by_point)
    assert not running_runs
