"""What ``sweep submit``/``run``/``work`` check so that no point waits for a worker that cannot exist,
and no trial hangs or dies on something known before it starts (:mod:`mhmoe.sweep.checks`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from mhmoe.commands.sweep import main as sweep_main
from mhmoe.sweep import expand, load_spec
from mhmoe.sweep.queue import SweepQueue
from mhmoe.sweep.submit import submit_sweep
from mhmoe.sweep.worker import WorkerOptions, run_trial
from tests.sweep.conftest import debug_spec

CLUSTER_VARS = ("SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "LSB_JOBID", "MASTER_ADDR", "NODE_RANK")


def _submitted(tmp_path: Path, stores: dict[str, str], name: str, group: dict) -> None:
    spec = load_spec(debug_spec(tmp_path / f"{name}.yaml", name=name, steps=4, groups={name: group}))
    submit_sweep(spec, expand(spec), storage=stores["storage"], tracking_uri=stores["tracking"])


def test_work_says_which_points_none_of_its_workers_can_take(tmp_path: Path, stores: dict[str, str],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """It used to start workers that each left the 2-device trial queued and exit 0 after 0 trials."""
    _submitted(tmp_path, stores, "two", {"model.ffn": "smoe", "train.devices": 2, "train.accelerator": "cpu"})
    code = sweep_main(["work", "--study", "two", "--storage", stores["storage"], "--no-linger"])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err and "starting" not in out
    assert ("error: sweep two: 1 waiting point(s) that no worker here can take: point two/seed=0 needs "
            "train.devices=2; each worker here holds 1 device(s) on one node; start workers with --devices 0,1 "
            "--devices-per-trial 2 (GPUs) or --devices-per-trial 2 (CPU ranks)") in err
    (trial,) = SweepQueue(stores["storage"], "two").trials()
    assert trial.state == TrialState.WAITING and "worker" not in trial.user_attrs


def test_submit_warns_about_gpus_this_machine_lacks_and_submits(tmp_path: Path, stores: dict[str, str],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A login node submits for GPU workers: a warning, not a refusal."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    spec = debug_spec(tmp_path / "gpu.yaml", name="gpu", groups={"gpu": {"model.ffn": "smoe", "train.devices": 2,
                                                                          "train.accelerator": "gpu"}})
    assert sweep_main(["submit", str(spec), "--storage", stores["storage"], "--tracking-uri", stores["tracking"]]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == ["warning: point gpu/seed=0 needs 2 GPU(s) (train.devices=2) and this machine has 0; "
                                "start its workers where the GPUs are (`mhmoe sweep work SPEC --devices 0,1 "
                                "--devices-per-trial 2`)"]
    assert "enqueued 1 new point(s)" in out


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


@pytest.mark.slow
def test_eval_tasks_are_resolved_at_submit_with_close_matches(tmp_path: Path, stores: dict[str, str],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown task used to fail every trial after training. Only lm-eval's full index (~10 s idle, 30 s on a
    busy machine) can tell a name is unknown."""
    spec = debug_spec(tmp_path / "ev.yaml", name="ev", eval={"tasks": ["mhmoe_mc", "hellaswagg"]})
    home = sorted(Path(tmp_path).rglob("*"))
    code = sweep_main(["submit", str(spec), "--storage", stores["storage"], "--tracking-uri", stores["tracking"]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "eval.tasks: unknown task(s) ['hellaswagg']" in err and "close matches: hellaswag," in err
    assert sorted(Path(tmp_path).rglob("*")) == home  # no study, no MLflow store


def test_an_unknown_task_name_is_named_with_its_close_matches() -> None:
    """The refusal's hint, over the shipped tasks (the full built-in index is the slow test above)."""
    from mhmoe.evaluation.local_tasks import TEMPLATE_DIR
    from mhmoe.evaluation.task_manager import EvalError, _check_known, _manager

    with pytest.raises(EvalError, match=r"unknown task\(s\) \['mhmoe_mcc'\]: .*; close matches: mhmoe_mc, "):
        _check_known(["mhmoe_mcc", "mhmoe_gen"], _manager([TEMPLATE_DIR]))


def test_known_eval_task_names_pass_and_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shipped tasks are indexed where they are: resolving renders nothing into the home."""
    from mhmoe.evaluation.task_manager import check_task_names

    monkeypatch.setenv("MHMOE_HOME", str(tmp_path / "home"))
    check_task_names(["mhmoe_mc", "mhmoe_heldout_ppl"])
    assert not (tmp_path / "home").exists()
