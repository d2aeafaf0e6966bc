"""A ``sweep work`` / ``sweep run`` / worker that ends with a point failed for good exits 1 and names it
last, however the point failed: in this run, in an earlier one, or reaped from a dead worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from mhmoe.commands.sweep import main as sweep_main
from mhmoe.sweep.queue import SweepQueue
from mhmoe.sweep.worker import WorkerOptions, run_worker
from tests.sweep.conftest import debug_spec, wait_for


def _one_point(tmp_path: Path, stores: dict[str, str], name: str, **extra) -> tuple[Path, SweepQueue]:
    spec = debug_spec(tmp_path / f"{name}.yaml", name=name, groups={"smoe": {"model.ffn": "smoe"}}, **extra)
    assert sweep_main(["submit", str(spec), "--storage", stores["storage"], "--tracking-uri", stores["tracking"]]) == 0
    return spec, SweepQueue.with_heartbeats(stores["storage"], name)


def test_work_and_run_exit_1_naming_a_point_that_failed_in_an_earlier_invocation(
        tmp_path: Path, stores: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    spec, queue = _one_point(tmp_path, stores, "earlier")
    trial = queue.claim()
    assert queue.fail(trial, "boom", retry=False) == "failed"
    label = trial.user_attrs["point"]
    capsys.readouterr()

    assert sweep_main(["work", "--study", "earlier", "--storage", stores["storage"]]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("sweep earlier: 1 point(s) failed for good: ") and label in last

    assert sweep_main(["run", str(spec), "--storage", stores["storage"], "--tracking-uri", stores["tracking"],
                       "--no-report"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("sweep earlier: 1 point(s) failed for good: ") and label in last


def test_a_worker_that_reaps_a_dead_workers_last_attempt_exits_1(tmp_path: Path, stores: dict[str, str]) -> None:
    _, queue = _one_point(tmp_path, stores, "reaped", retries=0, heartbeat={"interval": 1, "grace": 3})
    queue.claim()  # its worker dies: no heartbeat, and no attempt left after this one
    wait_for(lambda: queue.stale_trial_ids(), 10, "the trial to go stale")
    options = WorkerOptions(storage=stores["storage"], study="reaped", tracking_uri=stores["tracking"],
                            checkpoint_root=Path(stores["checkpoints"]), linger=False, poll_s=0.5)
    assert run_worker(options) == 1
    assert [point.state for point in queue.point_states()] == ["failed"]
