"""Checkpoints a crash or a disk cannot turn into lost or silently wrong training.

Real training of the debug model: a zeroed or truncated ``last.ckpt`` is refused (digest / parse)
and the run resumes from ``previous.ckpt``; with neither usable the resume refuses to start; a
crafted pickle never runs, even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1; a diverging run stops at
the first non-finite loss it syncs, FAILED in MLflow with the step.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

import mlflow
import pytest
import torch

from mhmoe.config.run import resolve_run_config
from mhmoe.store.atomic import NEARLY_FULL_BYTES, DiskFull, as_disk_full
from mhmoe.tracking.names import TAG_FAILURE
from mhmoe.training.checkpoint import CheckpointError, read_checkpoint
from mhmoe.training.checkpoint_files import LAST, PREVIOUS, pick_resume_checkpoint
from mhmoe.training.checkpoint_io import AtomicCheckpointIO
from mhmoe.training.failures import Diverged, failure_reason
from mhmoe.training.request import TrainRequest
from mhmoe.training.runner import train


def config(**overrides):
    base = {"train.max_steps": 20, "train.val_every": 10, "train.checkpoint_every": 5, "train.log_every": 5,
            "data.val_max_windows": 4}
    return resolve_run_config("debug", None, {**base, **overrides})


def all_runs(tracking: str) -> list:
    client = mlflow.MlflowClient(tracking)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def zero_bytes(path: Path, count: int = 4096) -> None:
    """Overwrite ``count`` bytes in the middle of the file with zeros (a bad disk block)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(count)
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


@pytest.fixture(scope="module")
def _paused_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A run paused at step 10 with checkpoints at 5 (previous) and 10 (last), trained once."""
    root = tmp_path_factory.mktemp("paused")
    result = train(TrainRequest(
        config=config(), tracking_uri=f"sqlite:///{root / 'mlflow.db'}", checkpoint_dir=root / "ckpt", progress=False,
        stop_after=10))
    assert result.final_step == 10
    assert read_checkpoint(root / "ckpt" / LAST)["global_step"] == 10
    assert read_checkpoint(root / "ckpt" / PREVIOUS)["global_step"] == 5
    return root, result.run_id


@pytest.fixture
def paused(_paused_once: tuple[Path, str], tmp_path: Path) -> tuple[str, str, Path]:
    """A private copy of the paused run (store + checkpoints): (tracking URI, run id, folder)."""
    root, run_id = _paused_once
    shutil.copytree(root, tmp_path / "run")
    return f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}", run_id, tmp_path / "run" / "ckpt"


@pytest.mark.parametrize("damage", [zero_bytes, truncate], ids=["zeroed", "truncated"])
def test_resume_falls_back_to_the_previous_checkpoint(paused, damage) -> None:
    tracking, run_id, folder = paused
    damage(folder / LAST)
    pick = pick_resume_checkpoint(folder)
    assert pick.path == folder / PREVIOUS and len(pick.problems) == 1 and str(folder / LAST) in pick.problems[0]

    result = train(TrainRequest(
        config=config(), tracking_uri=tracking, checkpoint_dir=folder, run_id=run_id, resume=True, progress=False))
    assert (result.start_step, result.final_step) == (5, 20)
    assert read_checkpoint(result.checkpoint_path)["global_step"] == 20  # verified final checkpoint
    assert mlflow.MlflowClient(tracking).get_run(run_id).info.status == "FINISHED"


def test_resume_refuses_when_no_checkpoint_is_usable(paused) -> None:
    tracking, run_id, folder = paused
    zero_bytes(folder / LAST)
    truncate(folder / PREVIOUS)
    runs_before = len(all_runs(tracking))
    with pytest.raises(CheckpointError, match="no usable checkpoint") as err:
        train(TrainRequest(
            config=config(), tracking_uri=tracking, checkpoint_dir=folder, run_id=run_id, resume=True, progress=False))
    assert LAST in str(err.value) and PREVIOUS in str(err.value)
    assert len(all_runs(tracking)) == runs_before


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PAYLOAD_MARKER']}",))


def test_a_crafted_checkpoint_never_runs_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "payload-ran"
    monkeypatch.setenv("PAYLOAD_MARKER", str(marker))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch would unpickle anything by default
    crafted = tmp_path / LAST
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {}}, "evil": _Payload()}, crafted,
               pickle_protocol=pickle.DEFAULT_PROTOCOL)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="not a safe, readable torch checkpoint"):
        AtomicCheckpointIO().load_checkpoint(crafted)  # the path Lightning's resume takes
    assert pick_resume_checkpoint(tmp_path).path is None
    assert not marker.exists()


def test_overwriting_last_keeps_the_previous_one(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    io.save_checkpoint({"n": torch.tensor(1), "global_step": 1}, tmp_path / LAST)
    assert not (tmp_path / PREVIOUS).exists()
    io.save_checkpoint({"n": torch.tensor(2), "global_step": 2}, tmp_path / LAST)
    io.save_checkpoint({"n": torch.tensor(2), "global_step": 2}, tmp_path / LAST)  # same step: no rotation
    assert torch.load(tmp_path / LAST, weights_only=True)["n"] == 2
    assert torch.load(tmp_path / PREVIOUS, weights_only=True)["n"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST, PREVIOUS]  # no temp files left

    def lost() -> None:
        raise RuntimeError("lost claim")

    with pytest.raises(RuntimeError, match="lost claim"):
        AtomicCheckpointIO(fence=lost).save_checkpoint({"n": torch.tensor(3), "global_step": 3}, tmp_path / LAST)
    assert torch.load(tmp_path / LAST, weights_only=True)["n"] == 2


def test_divergence_stops_at_the_first_logged_step_and_fails_the_run(tmp_path: Path) -> None:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(Diverged) as err:
        train(TrainRequest(
            config=config(**{"optim.lr": 1e3, "train.log_every": 2}), tracking_uri=tracking,
            checkpoint_dir=tmp_path / "ckpt", progress=False))
    step = err.value.step
    assert step % 2 == 0 and step < 20 and err.value.metric.startswith("train/")
    client = mlflow.MlflowClient(tracking)
    (run,) = all_runs(tracking)
    assert run.info.status == "FAILED"
    assert run.data.tags[TAG_FAILURE] == f"diverged: {err.value.metric} is {err.value.value} at step {step}"
    logged = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert max(logged) < step  # the non-finite value itself is not logged as a training curve point


def test_a_full_disk_is_named_with_the_folder_and_its_free_space(tmp_path: Path) -> None:
    """A real ENOSPC (/dev/full refuses every write) becomes one line naming the folder; other errors do not."""
    with pytest.raises(OSError) as raw, open("/dev/full", "wb") as handle:
        torch.save({"w": torch.zeros(4096)}, handle)
        handle.flush()
    full = as_disk_full(raw.value, tmp_path)
    assert full is not None
    assert re.fullmatch(rf"No space left on device: {re.escape(str(tmp_path))} \(\d+ MB free\)", str(full))
    assert failure_reason(full) == str(full)  # the line Optuna, MLflow and `sweep status` show
    assert as_disk_full(ValueError("bad value"), tmp_path) is None
    # torch's errno-less short write is a full disk only when the folder really has no room left
    assert shutil.disk_usage(tmp_path).free > NEARLY_FULL_BYTES
    assert as_disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
                        tmp_path) is None


def test_a_checkpoint_save_on_a_full_disk_says_so_and_leaves_no_partial_file(tiny_disk: Path) -> None:
    io = AtomicCheckpointIO()
    io.save_checkpoint({"n": torch.tensor(1), "global_step": 1}, tiny_disk / LAST)  # a small one fits
    with pytest.raises(DiskFull, match=rf"^No space left on device: {re.escape(str(tiny_disk))} \(0 MB free\)$"):
        io.save_checkpoint({"w": torch.zeros(2**20), "global_step": 2}, tiny_disk / LAST)  # 4 MB on a 1 MB disk
    assert sorted(p.name for p in tiny_disk.iterdir()) == [LAST]  # no temp file, the old one kept
    assert torch.load(tiny_disk / LAST, weights_only=True)["n"] == 1


def test_a_resume_at_the_last_step_reports_the_step_it_resumed_at(paused) -> None:
    """A worker that died after its last checkpoint: the retry resumes at max_steps and trains nothing,
    so the step range it reports (the worker's `steps A->B` line) is 10->10, not 0->10."""
    tracking, run_id, folder = paused  # last.ckpt at step 10: the end of a 10-step run
    again = train(TrainRequest(
        config=config(**{"train.max_steps": 10}), tracking_uri=tracking, checkpoint_dir=folder, run_id=run_id,
        resume=True, progress=False))
    assert (again.start_step, again.final_step) == (10, 10)


def test_temp_files_of_a_killed_write_are_removed_when_the_run_resumes(
        paused, capsys: pytest.CaptureFixture[str]) -> None:
    tracking, run_id, folder = paused
    killed_write = folder / ".last.ckpt.k1ll3d_x.tmp"  # what atomic_write leaves when SIGKILLed mid-save
    killed_write.write_bytes(b"half a checkpoint")
    other = folder / "notes.tmp"  # not one of ours: kept
    other.write_text("mine")
    checkpoints = {p.name: p.read_bytes() for p in folder.glob("*.ckpt")}
    train(TrainRequest(
        config=config(**{"train.max_steps": 10}), tracking_uri=tracking, checkpoint_dir=folder, run_id=run_id,
        resume=True, progress=False))  # resumes at step 10, the end: trains and overwrites nothing
    assert not killed_write.exists() and other.read_text() == "mine"
    assert f"removed 1 temp file(s) left in {folder} by an interrupted write: {killed_write.name}" \
        in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.glob("*.ckpt") if p.name in checkpoints} == checkpoints
