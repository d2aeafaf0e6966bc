"""What ``sweep submit``/``run``/``work`` check so that no point waits for a worker that cannot exist,
and no trial hangs or dies on something known before it starts (:mod:`mhmoe.sweep.checks`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from mhmoe.sweep import expand, load_spec
from mhmoe.sweep.queue import SweepQueue
from mhmoe.sweep.submit import submit_sweep
from mhmoe.sweep.worker import WorkerOptions, run_trial
from tests.sweep.conftest import debug_spec

CLUSTER_VARS = ("SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "LSB_JOBID", "MASTER_ADDR", "NODE_RANK")


def _submitted(tmp_path: Path, stores: dict[str, str], name: str, group: dict) -> None:
    spec = load_spec(debug_spec(tmp_path / f"{name}.yaml", name=name, steps=4, groups={name: group}))
    submit_sweep(spec, expand(spec), storage=stores["storage"], tracking_uri=stores["tracking"])


def test_a_multi_node_trial_without_a_cluster_launcher_fails_at_once_without_retry(
        tmp_path: Path, stores: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning would wait for the other node for ever; the trial fails with the reason instead."""
    for var in CLUSTER_VARS:
        monkeypatch.delenv(var, raising=False)
    _submitted(tmp_path, stores, "nodes", {"model.ffn": "smoe", "train.num_nodes": 2})
    queue = SweepQueue(stores["storage"], "nodes")
    trial = queue.claim()  # as a worker would if it ever took a multi-node trial (DeviceFit leaves them queued)
    options = WorkerOptions(storage=stores["storage"], study="nodes", tracking_uri=stores["tracking"],
                            checkpoint_root=Path(stores["checkpoints"]))
    assert run_trial(queue, trial, options) == "failed"
    (done,) = SweepQueue(stores["storage"], "nodes").trials()
    assert done.state == TrialState.FAIL
    assert done.user_attrs["failure_reason"].startswith("train.num_nodes=2 needs a cluster launcher")
