"""Data parallel on CPU: 2 real rank processes (gloo), one thread each."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest

from mhmoe.config.run import resolve_run_config
from mhmoe.tracking.provenance import command_line
from mhmoe.training.ranks import CHECKPOINT_DIR_ENV
from mhmoe.training.request import TrainRequest
from mhmoe.training.runner import train

BASE = {"moe.aux_loss_coef": 0.0, "moe.capacity_mode": "dropless", "train.accelerator": "cpu",
        "train.num_threads": 1, "train.max_steps": 6, "train.val_every": 3, "train.log_every": 1,
        "train.checkpoint_every": 3, "data.val_max_windows": 8}


def _history(client: mlflow.MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_two_rank_ddp_logs_one_finished_run_and_matches_one_process(tmp_path: Path) -> None:
    """aux 0 and dropless: each rank reads half of every optimizer batch (micro-batches of 2 x 2
    accumulated), so the loss curve and validation equal one process's 8-sequence batches."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking)
    single = train(TrainRequest(
        config=resolve_run_config("debug", None, BASE), tracking_uri=tracking, checkpoint_dir=tmp_path / "one",
        progress=False))
    ddp_cfg = resolve_run_config("debug", None, {**BASE, "train.devices": 2, "train.strategy": "ddp",
                                                 "train.micro_batch_size": 2})
    ddp = train(TrainRequest(
        config=ddp_cfg, tracking_uri=tracking, experiment_name="ddp", checkpoint_dir=tmp_path / "ddp", progress=False))
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert [r.info.run_id for r in runs] == [ddp.run_id] and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.params["train.devices"] == "2" and run.data.tags["mhmoe.checkpoint"] == str(ddp.checkpoint_path)
    # rank 0 only
    assert sorted(p.name for p in (tmp_path / "ddp").glob("*.ckpt")) == ["final.ckpt", "last.ckpt", "previous.ckpt"]
    assert ddp.final_step == 6 and "val/shakespeare/ppl" in run.data.metrics
    # The command that started the run, not rank 0's internal one.
    assert run.data.tags["mhmoe.command"] == command_line() and "rank_process" not in run.data.tags["mhmoe.command"]
    one, two = _history(client, single.run_id, "train/loss"), _history(client, ddp.run_id, "train/loss")
    assert [s for s, _ in two] == list(range(1, 7))
    for (step, a), (_, b) in zip(one, two, strict=True):
        assert b == pytest.approx(a, abs=2e-5), f"step {step}"
    for key in ("val/shakespeare/loss", "val/pydoc/loss"):
        assert [s for s, _ in _history(client, ddp.run_id, key)] == [3, 6]
        assert ddp.metrics[key] == pytest.approx(single.metrics[key], abs=1e-4)


@pytest.mark.slow
def test_killed_ddp_run_resumes_in_the_same_mlflow_run(tmp_path: Path) -> None:
    """SIGKILL the whole 2-rank job (its process group) after its first checkpoint, then resume under
    DDP: the same MLflow run continues from the last checkpoint and finishes."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = {**BASE, "train.devices": 2, "train.max_steps": 60, "train.val_every": 30}
    command = [sys.executable, "-m", "mhmoe.cli", "train", "--preset", "debug",
               *[f"{k}={v}" for k, v in overrides.items()], "--no-progress", "--tracking-uri", tracking,
               "--checkpoint-dir", str(tmp_path / "ckpt")]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (tmp_path / "ckpt" / "last.ckpt").is_file():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    client = mlflow.MlflowClient(tracking)
    (run,) = client.search_runs([client.get_experiment_by_name("mhmoe").experiment_id])
    assert run.info.status == "RUNNING"
    resumed = train(TrainRequest(
        config=resolve_run_config("debug", None, overrides), tracking_uri=tracking, run_id=run.info.run_id,
        checkpoint_dir=tmp_path / "ckpt", resume=True, progress=False))
    assert resumed.run_id == run.info.run_id and 3 <= resumed.start_step < 60 and resumed.final_step == 60
    assert resumed.start_step % 3 == 0  # an optimizer-step boundary with a checkpoint
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert [s for s, _ in _history(client, run.info.run_id, "val/shakespeare/loss")][-1] == 60


@pytest.mark.slow  # ~25 s; the single-process fence is in the default suite (test_reliability)
def test_a_lost_claim_stops_the_ranks_and_raises(tmp_path: Path) -> None:
    """The caller's fence stays in the caller's process: once lost (here: when the first checkpoint
    appears), the rank processes are stopped long before the run's end and LostClaim is raised."""
    import threading

    from mhmoe.training.failures import Fence, LostClaim

    ckpt = tmp_path / "ckpt"
    fence = Fence(lambda: not (ckpt / "last.ckpt").is_file())

    def heartbeat() -> None:  # what a sweep worker's heartbeat thread does
        while fence.refresh():
            time.sleep(0.05)

    threading.Thread(target=heartbeat, daemon=True).start()
    overrides = {**BASE, "train.devices": 2, "train.max_steps": 3000, "train.val_every": 3000}
    started = time.time()
    with pytest.raises(LostClaim):
        train(TrainRequest(
            config=resolve_run_config("debug", None, overrides), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            checkpoint_dir=ckpt, progress=False, fence=fence))
    assert time.time() - started < 120
    assert not (ckpt / "final.ckpt").exists()
    deadline = time.time() + 15
    while (left := _ranks_of(ckpt)) and time.time() < deadline:
        time.sleep(0.2)
    assert left == []  # no rank left behind


def _ranks_of(checkpoint_dir: Path) -> list[int]:
    """Live processes that are ranks of the job writing ``checkpoint_dir`` (rank 0 exports it)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get(CHECKPOINT_DIR_ENV) == str(checkpoint_dir):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.mark.slow  # ~25 s: three processes import torch and Lightning in turn
def test_ranks_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    """SIGKILL `mhmoe train` (as a sweep worker would be) while its 2 ranks train: both ranks are
    gone within seconds, instead of training on until someone reaps the trial."""
    overrides = {**BASE, "train.devices": 2, "train.max_steps": 100000, "train.val_every": 100000}
    command = [sys.executable, "-m", "mhmoe.cli", "train", "--preset", "debug",
               *[f"{k}={v}" for k, v in overrides.items()], "--no-progress",
               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--checkpoint-dir", str(tmp_path / "ckpt")]
    # A session of its own: the cleanup below can kill whatever is left, ranks included.
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(ranks := _rank_processes(proc.pid)) < 2:  # rank 1 runs: Lightning has launched it
            assert time.time() < deadline and proc.poll() is None, "the ranks never started"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        gone_by = time.time() + 5
        while (alive := [r.pid for r in ranks if _alive(r)]) and time.time() < gone_by:
            time.sleep(0.1)
        assert alive == [], "ranks outlived the process that started them"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _rank_processes(parent: int) -> list[psutil.Process]:
    """The rank processes below ``parent`` (rank 0 and the ranks Lightning started from it)."""
    try:
        below = psutil.Process(parent).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for proc in below:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if "mhmoe.training.rank_process" in proc.cmdline():
                found.append(proc)
    return found


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_rank_processes_are_as_quiet_as_the_command(tmp_path: Path) -> None:
    """``mhmoe train`` silences Lightning's banners; its rank processes used to print them all again."""
    overrides = [f"{k}={v}" for k, v in {**BASE, "train.devices": 2, "train.strategy": "ddp",
                                         "train.micro_batch_size": 2}.items()]
    out = subprocess.run([sys.executable, "-m", "mhmoe.cli", "train", "--preset", "debug", *overrides,
                          "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--no-progress"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "MHMOE_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "GPU available" not in out.stdout + out.stderr  # Lightning's per-fit banner
