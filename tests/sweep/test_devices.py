"""Multi-device trials in sweeps: device groups per worker, trials too big for a worker stay queued."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from mhmoe.config.base import ConfigError
from mhmoe.sweep import expand, load_spec
from mhmoe.sweep.launch import worker_slots
from mhmoe.sweep.queue import SweepQueue
from mhmoe.sweep.submit import submit_sweep
from mhmoe.sweep.worker import WorkerOptions, run_worker
from tests.sweep.conftest import debug_spec


def test_devices_are_grouped_per_worker() -> None:
    slots = worker_slots(["0", "1", "2", "3"], devices_per_trial=2)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0,1", "2,3"]
    assert [s.devices for s in slots] == [2, 2] and [s.name for s in slots] == ["gpu0+1", "gpu2+3"]
    assert [s.devices for s in worker_slots(["0", "1"])] == [1, 1]
    with pytest.raises(ConfigError,
                       match=r"--devices-per-trial=2 must be >= 1 and divide the number of --devices \(3\)"):
        worker_slots(["0", "1", "2"], devices_per_trial=2)


def test_worker_leaves_a_trial_needing_more_devices_queued(tmp_path: Path, stores: dict[str, str],
                                                           capsys: pytest.CaptureFixture) -> None:
    path = debug_spec(tmp_path / "s.yaml", name="devices", steps=4,
                      groups={"two": {"model.ffn": "smoe", "train.devices": 2, "train.accelerator": "cpu"}})
    spec = load_spec(path)
    submit_sweep(spec, expand(spec), storage=stores["storage"], tracking_uri=stores["tracking"])
    options = WorkerOptions(storage=stores["storage"], study="devices", tracking_uri=stores["tracking"],
                            checkpoint_root=Path(stores["checkpoints"]), linger=False, devices=1, poll_s=0.1)
    assert run_worker(options) == 0  # nothing it can run: exits instead of waiting for ever
    (trial,) = SweepQueue(stores["storage"], "devices").trials()
    assert trial.state == TrialState.WAITING and trial.user_attrs["attempt"] == 1 and "worker" not in trial.user_attrs
    out = capsys.readouterr().out
    assert out.count("trial 0 two/seed=0 needs train.devices=2 but this worker holds 1 device(s)") == 1
    assert "left queued for a bigger worker" in out and "exiting after 0 trial(s)" in out
    bigger = SweepQueue(stores["storage"], "devices")
    from mhmoe.sweep.devices import DeviceFit

    claimed = bigger.claim(accepts=DeviceFit(2, print))
    assert claimed is not None and claimed.number == 0  # a 2-device worker takes it


@pytest.mark.slow  # ~27 s of two-rank training; DDP training itself is in the default suite (test_ddp)
def test_a_ddp_trial_reports_its_validations_from_rank_zero(tmp_path: Path, stores: dict[str, str],
                                                             capfd: pytest.CaptureFixture) -> None:
    """The worker's callbacks cannot enter the rank processes: rank 0 rebuilds them from the queue,
    so a 2-rank trial still stores an intermediate value and prints a progress line per validation."""
    path = debug_spec(tmp_path / "s.yaml", name="ddp", steps=6, overrides={"train.val_every": 3},
                      groups={"two": {"model.ffn": "smoe", "train.devices": 2, "train.accelerator": "cpu",
                                      "train.num_threads": 1}})
    spec = load_spec(path)
    submit_sweep(spec, expand(spec), storage=stores["storage"], tracking_uri=stores["tracking"])
    options = WorkerOptions(storage=stores["storage"], study="ddp", tracking_uri=stores["tracking"],
                            checkpoint_root=Path(stores["checkpoints"]), linger=False, devices=2, poll_s=0.1)
    assert run_worker(options) == 0
    (trial,) = SweepQueue(stores["storage"], "ddp").trials()
    assert trial.state == TrialState.COMPLETE and sorted(trial.intermediate_values) == [3, 6]
    assert trial.intermediate_values[6] == pytest.approx(trial.value)
    out = capfd.readouterr().out
    assert "trial 0 two/seed=0: step 3/6 val/shakespeare/ppl=" in out and "step 6/6" in out
