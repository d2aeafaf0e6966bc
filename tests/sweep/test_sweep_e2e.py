"""Whole sweeps with real worker processes, real training, real Optuna storage and real MLflow.

Each checks the contract: every grid point COMPLETE exactly once in Optuna and exactly one
FINISHED MLflow child run per point under the sweep's parent run -- with 2 concurrent workers on
SQLite and on PostgreSQL, and after a worker is SIGKILLed mid-trial (the point resumes from its
checkpoint in the same MLflow run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from mhmoe.sweep import load_spec, plan, tracking as sweep_tracking
from mhmoe.sweep.checkpoints import point_checkpoint_dir
from mhmoe.sweep.queue import SweepQueue
from mhmoe.sweep.status import format_status, sweep_status
from mhmoe.sweep.summary import VARIANTS_TABLE
from mhmoe.tracking import names
from tests.pg_server import fresh_database
from tests.sweep.conftest import REPO, debug_spec, sweep_cli, wait_for


def assert_each_point_finished_once(spec_path: Path | str, storage: str, tracking: str) -> dict[str, list]:
    """Optuna: one COMPLETE trial per point; MLflow: one FINISHED child run per point. Returns trials by hash."""
    spec = load_spec(spec_path)
    the_plan = plan(spec)
    expected = {p.config_hash for p in the_plan.points}
    queue = SweepQueue(storage, spec.name)
    assert queue.settings()["metric"] == the_plan.metric  # resolved once in planning, stored with the study
    trials = queue.trials()
    by_hash: dict[str, list] = {}
    for trial in trials:
        by_hash.setdefault(trial.user_attrs["config_hash"], []).append(trial)
    assert set(by_hash) == expected
    for attempts in by_hash.values():
        assert [t.state for t in attempts].count(TrialState.COMPLETE) == 1
        assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in attempts)
    assert all(t.value is not None and t.value > 1 for t in trials if t.state == TrialState.COMPLETE)

    client = mlflow.MlflowClient(tracking)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    tagged = f"tags.`{names.TAG_SWEEP}` = '{spec.name}'"
    parents = client.search_runs(experiment_ids, f"{tagged} and tags.`{names.TAG_ROLE}` = '{names.ROLE_SWEEP}'")
    children = client.search_runs(experiment_ids, f"{tagged} and tags.`{names.TAG_ROLE}` = '{names.ROLE_TRIAL}'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.params[names.PARAM_SWEEP_METRIC] == the_plan.metric  # what the report reads
    assert sorted(r.data.tags[names.TAG_CONFIG_HASH] for r in children) == sorted(expected)
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        point_trials = by_hash[run.data.tags[names.TAG_CONFIG_HASH]]
        done = next(t for t in point_trials if t.state == TrialState.COMPLETE)
        assert done.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags[names.TAG_ATTEMPT] == str(done.user_attrs["attempt"])
        assert run.data.tags[names.TAG_TRIAL] == str(done.number)
        assert run.data.metrics[done.user_attrs["metric"]] == pytest.approx(done.value)
        for tag in (names.TAG_POINT, names.TAG_VARIANT, names.TAG_SEED):
            assert run.data.tags[tag]
    return by_hash


def assert_researcher_views(storage: str, tracking: str, run_output: str) -> None:
    """What optuna-dashboard and the MLflow runs table show for the finished smoke sweep."""
    study = optuna.load_study(study_name="smoke", storage=storage)
    metric = "val/shakespeare/ppl"
    assert study.metric_names == [metric]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    for trial in done:
        # Learning curves: one intermediate value per validation (val_every 150 of 300 steps).
        assert sorted(trial.intermediate_values) == [150, 300]
        assert trial.intermediate_values[300] == pytest.approx(trial.value)
        assert "seed" not in trial.params and trial.user_attrs["seed"] in (0, 1)  # out of importance
        assert study.trials[trial.number].params["variant"] == trial.user_attrs["variant"]
        assert ("moe.num_experts" in trial.params) == (trial.user_attrs["variant"] != "dense")
        # Live progress: one line per validation of each trial, with the metric named.
        assert f"trial {trial.number} {trial.user_attrs['point']}: step 150/300 {metric}=" in run_output
        line = f"trial {trial.number} {trial.user_attrs['point']}: step 300/300 {metric}={trial.value:.4g}"
        assert line in run_output

    client = mlflow.MlflowClient(tracking)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    parent = client.search_runs(experiment_ids, f"tags.`{names.TAG_ROLE}` = '{names.ROLE_SWEEP}'")[0]
    children = client.search_runs(experiment_ids, f"tags.`{names.TAG_ROLE}` = '{names.ROLE_TRIAL}'")
    by_variant: dict[str, list[float]] = {}
    for run in children:
        by_variant.setdefault(run.data.tags[names.TAG_VARIANT], []).append(run.data.metrics[metric])
        params = run.data.params
        assert params["variant"] == run.data.tags[names.TAG_VARIANT]
        is_dense = params["model.ffn"] == "dense"
        assert any(k.startswith("moe.") for k in params) != is_dense  # dense: no moe.* params
        names_by_ffn = {"dense": "Dense", "smoe": "SMoE", "fine_grained": "Fine-grained SMoE",
                        "mhmoe": "MH-MoE (head=2)"}
        assert run.data.tags[names.TAG_DISPLAY_NAME] == names_by_ffn[params["model.ffn"]]
    summary = parent.data.metrics
    assert set(by_variant) == {"dense", "smoe", "fine_grained", "mhmoe-h2"}
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, VARIANTS_TABLE)).read_text())
    means = pd.DataFrame(table["data"], columns=table["columns"]).set_index("variant")
    for variant, values in by_variant.items():
        assert means.loc[variant, "mean"] == pytest.approx(sum(values) / len(values))
        assert means.loc[variant, "seeds"] == 2
        assert f"| {variant} | 2 |" in parent.data.tags["mlflow.note.content"]
    assert summary[f"best/{metric}"] == pytest.approx(min(min(v) for v in by_variant.values()))
    assert (summary["points/done"], summary["points/failed"], summary["points/running"]) == (8, 0, 0)
    assert parent.data.tags[names.TAG_BEST_POINT] in {r.data.tags[names.TAG_POINT] for r in children}
    assert not any(key.startswith("mean/") for key in summary)


def test_smoke_with_two_workers_on_sqlite(warm_data, stores: dict[str, str]) -> None:
    stored = ["--storage", stores["storage"]]
    logs = Path(stores["checkpoints"]).parent / "logs"
    run = sweep_cli("run", "smoke", "--workers", "2", *stored, "--tracking-uri", stores["tracking"],
                    "--checkpoint-root", stores["checkpoints"], "--poll", "1", "--no-report", "--log-dir", str(logs))
    by_hash = assert_each_point_finished_once("smoke", stores["storage"], stores["tracking"])
    assert len(by_hash) == 8
    workers = {t.user_attrs["worker"] for attempts in by_hash.values() for t in attempts}
    assert len(workers) == 2, "both workers should have trained"
    # With --log-dir each worker's output is in its log, and its progress lines still reach the console.
    assert_researcher_views(stores["storage"], stores["tracking"], run.stdout)
    logged = (logs / "worker-cpu0.log").read_text() + (logs / "worker-cpu1.log").read_text()
    for line in ("dense/seed=0 (attempt 1) started", "dense/seed=0: step 150/300", "dense/seed=0 done:"):
        assert line in run.stdout and line in logged, (line, run.stdout)

    status = sweep_cli("status", "smoke", *stored).stdout
    assert "8 points: 8 done, 0 running, 0 waiting, 0 failed; ETA done" in status
    again = sweep_cli("submit", "smoke", *stored).stdout
    assert "enqueued 0 new point(s), 8 already in the study" in again

    # The report on this real sweep: every figure with data, tables, provenance of the runs.
    from mhmoe.commands.report import main as report_main

    out = Path(stores["checkpoints"]).parent / "report"
    assert report_main(["smoke", "--out", str(out), "--tracking-uri", stores["tracking"]]) == 0
    index = (out / "index.md").read_text()
    assert "mhmoe sweep run smoke --workers 2" in index  # the command that produced the runs
    for name in ("val_curves", "expert_load", "routing_stats", "ppl_vs_flops"):
        assert (out / f"smoke__{name}.png").stat().st_size > 10_000 and (out / f"smoke__{name}.pdf").is_file()
    for name in ("table1.md", "table1.tex", "aggregates.csv", "ordering.csv"):
        assert (out / f"smoke__{name}").is_file()
    assert (out / "index.html").is_file()


@pytest.mark.postgres
def test_two_workers_on_postgres(warm_data, postgres_server, tmp_path: Path, stores: dict[str, str]) -> None:
    storage = fresh_database(postgres_server, "sweep_e2e")
    spec = debug_spec(tmp_path / "pg.yaml", name="pg_sweep", grid={"seed": [0, 1]}, steps=15,
                      eval={"tasks": ["mhmoe_mc"], "limit": 4})
    sweep_cli("run", str(spec), "--workers", "2", "--storage", storage, "--tracking-uri", stores["tracking"],
              "--checkpoint-root", stores["checkpoints"], "--poll", "1", "--no-report")
    by_hash = assert_each_point_finished_once(spec, storage, stores["tracking"])
    assert len(by_hash) == 4
    trials = [t for attempts in by_hash.values() for t in attempts]
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    # The spec's lm-eval tasks ran on each final checkpoint and landed in the trial's run.
    client = mlflow.MlflowClient(stores["tracking"])
    for trial in trials:
        assert trial.user_attrs.get("eval_tasks") == ["mhmoe_mc"], trial.user_attrs.get("eval_error")
        metrics = client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
        assert any(key.startswith("eval/mhmoe_mc/") for key in metrics), sorted(metrics)



def _died_before_checkpoint(queue: SweepQueue, tracking: str) -> tuple[str, str]:
    """Claim the first point and leave what a worker killed right after MLflow setup leaves: a run
    with params (the runner logs a freshly measured peak FLOP/s) and no checkpoint. Returns
    (config hash, run id)."""
    trial = queue.claim()
    run_id = sweep_tracking.create_trial_run(tracking, "kill", None, trial.user_attrs["point"],
                                             sweep_tracking.trial_tags("kill", trial.number, trial.user_attrs))
    mlflow.MlflowClient(tracking).log_param(run_id, "perf.peak_flops", 1.0)
    queue.set_attrs(trial, {"mlflow_run_id": run_id})
    assert queue.fail(trial, "killed before its first checkpoint") == "retried"  # attempt 2 queued
    return trial.user_attrs["config_hash"], run_id


def test_killed_worker_trial_resumes_from_its_checkpoint(warm_data, tmp_path: Path, stores: dict[str, str]) -> None:
    spec_path = debug_spec(tmp_path / "kill.yaml", name="kill", steps=40,
                           overrides={"train.checkpoint_every": 4, "train.val_every": 20},
                           heartbeat={"interval": 1, "grace": 6})
    stored = ["--storage", stores["storage"], "--tracking-uri", stores["tracking"],
              "--checkpoint-root", stores["checkpoints"]]
    sweep_cli("submit", str(spec_path), "--storage", stores["storage"], "--tracking-uri", stores["tracking"])
    queue = SweepQueue(stores["storage"], "kill")
    early_hash, early_run = _died_before_checkpoint(queue, stores["tracking"])
    killed_hash = queue.trials()[1].user_attrs["config_hash"]  # the next trial a worker claims
    last_ckpt = point_checkpoint_dir(queue, Path(stores["checkpoints"]), killed_hash) / "last.ckpt"

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    worker = subprocess.Popen([sys.executable, "-m", "mhmoe.cli", "sweep", "work", str(spec_path), *stored,
                               "--cpu-workers", "1", "--poll", "1"], cwd=REPO, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(last_ckpt.is_file, 180, f"a checkpoint of trial 1 at {last_ckpt}")
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # supervisor and worker, mid-trial
        worker.wait(timeout=30)
    killed = queue.trials()[1]
    assert killed.state == TrialState.RUNNING and "final_step" not in killed.user_attrs
    # No worker is alive to reap it: status alone must tell that the trial is not really running.
    watcher = SweepQueue.with_heartbeats(stores["storage"], "kill")
    wait_for(lambda: sweep_status(watcher).stale == 1, 30, "sweep status to call the dead worker's trial stale")
    assert "(1 stale: worker gone" in format_status("kill", sweep_status(watcher))

    # A new worker started on its own, as on another node: storage URL + study name only.
    subprocess.run([sys.executable, "-m", "mhmoe.sweep.worker", "--storage", stores["storage"], "--study", "kill",
                    "--tracking-uri", stores["tracking"], "--checkpoint-root", stores["checkpoints"], "--poll", "1"],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=300)

    by_hash = assert_each_point_finished_once(spec_path, stores["storage"], stores["tracking"])
    attempts = by_hash[killed_hash]
    assert [t.state for t in attempts] == [TrialState.FAIL, TrialState.COMPLETE]
    resumed = attempts[1]
    assert resumed.user_attrs["attempt"] == 2 and resumed.user_attrs["previous_error"].startswith("stale")
    assert resumed.user_attrs["start_step"] > 0, "the re-queued trial should resume from its checkpoint"
    assert resumed.user_attrs["final_step"] == 40
    assert resumed.user_attrs["mlflow_run_id"] == killed.user_attrs["mlflow_run_id"]

    # No checkpoint to resume: trained from step 0 in a new run; the empty run is deleted.
    early = by_hash[early_hash]
    assert [t.state for t in early] == [TrialState.FAIL, TrialState.COMPLETE]
    assert early[1].user_attrs["start_step"] == 0 and early[1].user_attrs["mlflow_run_id"] != early_run
    assert mlflow.MlflowClient(stores["tracking"]).get_run(early_run).info.lifecycle_stage == "deleted"
