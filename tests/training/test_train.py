"""Real training on the embedded corpus, tracked in a real MLflow store."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from mhmoe.config.run import resolve_run_config
from mhmoe.model.routing import LOGGED_STATS
from mhmoe.sizing.budget import train_flops_per_token
from mhmoe.training.peak import CPU_PEAK_FLOPS_PER_THREAD
from mhmoe.training.request import TrainRequest
from mhmoe.training.runner import train


def debug_config(**overrides):
    base = {"model.ffn": "mhmoe", "moe.heads": 2, "moe.top_k": 2, "moe.num_experts": 8, "moe.expert_d_ff": 48,
            "train.max_steps": 40, "train.val_every": 10, "train.log_every": 1, "train.routing_every": 5,
            "data.val_max_windows": 8}
    base.update(overrides)
    return resolve_run_config("debug", None, base)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def history(client: mlflow.MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_debug_model_learns_and_everything_lands_in_mlflow(tracking: str, tmp_path: Path) -> None:
    cfg = debug_config()
    result = train(TrainRequest(config=cfg, tracking_uri=tracking, checkpoint_dir=tmp_path / "ckpt", progress=False))
    client = mlflow.MlflowClient(tracking)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    for name in ("shakespeare", "pydoc"):
        curve = history(client, result.run_id, f"val/{name}/loss")
        assert [s for s, _ in curve] == [10, 20, 30, 40]
        assert curve[-1][1] < curve[0][1]  # validation loss drops
        assert f"val/{name}/ppl" in run.data.metrics
    for block in (1,):  # debug: 2 layers, moe_every 2 -> block 1 is the MoE block
        for stat in LOGGED_STATS:
            assert f"routing/layer_{block}/{stat}" in run.data.metrics
            assert f"routing/mean/{stat}" in run.data.metrics
    assert run.data.params["moe.heads"] == "2"
    assert run.data.params["model.ffn"] == "mhmoe"
    assert int(run.data.params["budget.total_params"]) > 0
    assert run.data.tags["mhmoe.variant"] == "mhmoe-h2"
    assert run.data.tags["mhmoe.seed"] == "0"
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert "config.yaml" in artifacts
    loads = {a.path for a in client.list_artifacts(result.run_id, "routing")}
    assert "routing/load_step0000040.npy" in loads and "routing/divergence_step0000040.npy" in loads
    png = Path(client.download_artifacts(result.run_id, "routing/load_step0000010.png", str(tmp_path / "png")))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "routing/load_step0000040.png" in loads
    config_text = Path(client.download_artifacts(result.run_id, "config.yaml", str(tmp_path))).read_text()
    assert "heads: 2" in config_text
    assert run.data.tags["mhmoe.checkpoint"] == str(result.checkpoint_path) and result.checkpoint_path.is_file()
    assert 0 < run.data.metrics["perf/mfu"] < 1.5
    grad_norms = history(client, result.run_id, "train/grad_norm")
    assert [s for s, _ in grad_norms] == [s for s, _ in history(client, result.run_id, "train/loss")]
    assert all(0 < v < 1e3 for _, v in grad_norms)
    assert 0.1 < run.data.metrics["perf/peak_memory_gib"] < 24  # the process's peak RSS on CPU
    assert float(run.data.params["memory.estimate_gib"]) > 0
    assert run.data.metrics["perf/tokens_per_s"] > 0
    # MLflow's own conventions: source tags, experiment description, the final model as an artifact.
    assert run.data.tags["mlflow.source.git.commit"] == run.data.tags["mhmoe.git_commit"] != "unknown"
    assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.name"]
    assert run.data.tags["mhmoe.display_name"] == "MH-MoE (head=2)" and run.data.params["variant"] == "mhmoe-h2"
    assert "mlflow.note.content" in client.get_experiment(run.info.experiment_id).tags
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"corpus", "val/shakespeare", "val/pydoc"}
    assert inputs["corpus"].tags[0].value == "training" and inputs["val/pydoc"].tags[0].value == "validation"
    assert len({d.dataset.digest for d in inputs.values()}) == 3  # one fingerprint per distinct content
    logged = Path(client.download_artifacts(result.run_id, "checkpoint/final.ckpt", str(tmp_path / "dl")))
    assert logged.read_bytes() == result.checkpoint_path.read_bytes()


def test_first_logged_throughput_is_a_steady_state_rate(tracking: str, tmp_path: Path) -> None:
    """perf/* at the first log counts the steps since the interval began, not log_every of them."""
    # One thread: on a shared 2-core machine several threads make step times jitter by 2-4x.
    cfg = debug_config(**{"train.max_steps": 49, "train.log_every": 8, "train.val_every": 24,
                          "train.routing_every": 100, "data.val_max_windows": 2, "train.num_threads": 1,
                          "train.log_checkpoint": False})
    threads = torch.get_num_threads()
    try:
        result = train(TrainRequest(
            config=cfg, tracking_uri=tracking, checkpoint_dir=tmp_path / "ckpt", progress=False))
    finally:
        torch.set_num_threads(threads)
    client = mlflow.MlflowClient(tracking)
    rates = history(client, result.run_id, "perf/tokens_per_s")
    mfu = dict(history(client, result.run_id, "perf/mfu"))
    assert [s for s, _ in rates] == [8, 16, 24, 32, 40, 48]  # step 1 starts the first interval
    first, steady = rates[0][1], statistics.median(v for _, v in rates[1:])
    assert 0.5 < first / steady < 2, rates
    # Step 32 follows a validation: its interval is the 8 training steps after it, not the validation.
    assert 0.5 < dict(rates)[32] / steady < 2, rates
    ratios = {step: mfu[step] / value for step, value in rates}  # flops per token / peak: one constant
    assert max(ratios.values()) == pytest.approx(min(ratios.values()), rel=1e-9)
    # The denominator is the fixed nominal CPU peak of the one thread, not the matmul timed at start-up.
    params = client.get_run(result.run_id).data.params
    assert params["perf.peak_source"] == "cpu-nominal"
    assert float(params["perf.peak_flops"]) == CPU_PEAK_FLOPS_PER_THREAD
    assert float(params["perf.measured_matmul_flops"]) > 0
    assert ratios[8] == pytest.approx(train_flops_per_token(cfg.architecture, seq_len=cfg.train.seq_len)
                                      / CPU_PEAK_FLOPS_PER_THREAD, rel=1e-9)
    assert not client.list_artifacts(result.run_id, "checkpoint")  # train.log_checkpoint=false


def test_resume_continues_the_same_run_with_the_same_loss_curve(tracking: str, tmp_path: Path) -> None:
    cfg = debug_config(**{"train.checkpoint_every": 10, "train.max_steps": 30})
    client = mlflow.MlflowClient(tracking)
    whole = train(TrainRequest(config=cfg, tracking_uri=tracking, checkpoint_dir=tmp_path / "whole", progress=False))
    paused = train(TrainRequest(
        config=cfg, tracking_uri=tracking, checkpoint_dir=tmp_path / "split", progress=False, stop_after=20))
    assert paused.final_step == 20
    resumed = train(TrainRequest(
        config=cfg, tracking_uri=tracking, checkpoint_dir=tmp_path / "split", run_id=paused.run_id, resume=True,
        progress=False))
    assert resumed.run_id == paused.run_id and resumed.start_step == 20 and resumed.final_step == 30
    full_curve = history(client, whole.run_id, "train/loss")
    split_curve = history(client, paused.run_id, "train/loss")
    assert [s for s, _ in split_curve] == [s for s, _ in full_curve] == list(range(1, 31))
    for (step, a), (_, b) in zip(full_curve, split_curve):
        assert a == pytest.approx(b, abs=1e-6), f"step {step}"
    assert client.get_run(paused.run_id).info.status == "FINISHED"


def test_same_seed_gives_identical_curves_and_other_seed_differs(tracking: str, tmp_path: Path) -> None:
    cfg = debug_config(**{"train.max_steps": 8, "train.val_every": 8})
    client = mlflow.MlflowClient(tracking)
    a = train(TrainRequest(config=cfg, tracking_uri=tracking, checkpoint_dir=tmp_path / "a", progress=False))
    b = train(TrainRequest(config=cfg, tracking_uri=tracking, checkpoint_dir=tmp_path / "b", progress=False))
    c = train(TrainRequest(
        config=debug_config(**{"train.max_steps": 8, "train.val_every": 8, "seed": 1}), tracking_uri=tracking,
        checkpoint_dir=tmp_path / "c", progress=False))
    curve = lambda r: [v for _, v in history(client, r.run_id, "train/loss")]  # noqa: E731
    assert curve(a) == curve(b)
    assert curve(a) != curve(c)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mhmoe.cli", "train", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_unknown_key_lists_valid_keys_and_dry_run_prints_config() -> None:
    bad = run_cli("--preset", "debug", "moe.head=3", "--dry-run")
    assert bad.returncode == 2
    assert "unknown config key 'moe.head'" in bad.stderr and "moe.heads" in bad.stderr
    wrong = run_cli("--preset", "debug", "model.ffn=mhmoe", "moe.heads=5", "--dry-run")
    assert wrong.returncode == 2 and "moe.heads=5 does not divide model.d_model=48" in wrong.stderr
    ok = run_cli("--preset", "debug", "model.ffn=mhmoe", "moe.heads=3", "--dry-run")
    assert ok.returncode == 0, ok.stderr
    assert "heads: 3" in ok.stdout and "budget.total_params" in ok.stdout


def test_cli_training_prints_our_lines_not_library_chatter(tmp_path: Path) -> None:
    args = ("--preset", "debug", "train.max_steps=4", "train.val_every=4", "data.val_max_windows=2", "--no-progress",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--checkpoint-dir", str(tmp_path / "ckpt"))
    quiet = run_cli(*args)
    assert quiet.returncode == 0, quiet.stderr
    assert "run id:" in quiet.stdout and "final checkpoint:" in quiet.stdout
    text = quiet.stdout + quiet.stderr
    for chatter in ("GPU available", "Tip:", "Creating initial MLflow database tables", "weights_only"):
        assert chatter not in text, chatter
    verbose = run_cli(*args, "--verbose", "--experiment", "verbose")
    assert "GPU available" in verbose.stdout + verbose.stderr  # the switch really is what silences it


@pytest.mark.slow
def test_compiled_training_matches_names_and_learns(tracking: str, tmp_path: Path) -> None:
    """train.compile=true (torch.compile; grouped_mm stays eager) trains and checkpoints load."""
    from mhmoe.training.checkpoint import load_checkpoint

    cfg = debug_config(**{"train.compile": True, "train.max_steps": 20, "train.val_every": 10})
    result = train(TrainRequest(
        config=cfg, tracking_uri=tracking, checkpoint_dir=tmp_path / "compiled", progress=False))
    curve = history(mlflow.MlflowClient(tracking), result.run_id, "val/shakespeare/loss")
    assert curve[-1][1] < curve[0][1]
    assert load_checkpoint(result.checkpoint_path).global_step == 20


def test_system_metrics_land_in_the_run(tracking: str) -> None:
    import time

    from mhmoe.training.mlflow_run import start_system_metrics

    client = mlflow.MlflowClient(tracking)
    run_id = client.create_run(client.create_experiment("system")).info.run_id
    monitor = start_system_metrics(run_id, tracking, interval_s=0.5)
    time.sleep(2.0)
    monitor.finish()
    metrics = client.get_run(run_id).data.metrics
    assert 0 <= metrics["system/cpu_utilization_percentage"] <= 100
    assert metrics["system/system_memory_usage_megabytes"] > 0


def test_resume_in_a_copied_home_continues_the_copys_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 seeded_home) -> None:
    """The run's final checkpoint is recorded absolute (in the original home); a resume in a copy of
    the home (the store shared, outside both) trains on in the copy's folder and leaves the original as it was."""
    from mhmoe.cli import main

    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    short = ["--preset", "debug", "train.val_every=2", "data.val_max_windows=2", "train.peak_flops=1e12",
             "train.system_metrics=false", "--no-progress", "--tracking-uri", store]
    monkeypatch.setenv("MHMOE_HOME", str(seeded_home(tmp_path / "home")))
    (tmp_path / "store").mkdir()
    assert main(["train", *short, "--max-steps", "2"]) == 0
    (run,) = mlflow.MlflowClient(store).search_runs(["1"])
    assert run.data.tags["mhmoe.checkpoint"].startswith(str(tmp_path / "home"))
    shutil.copytree(tmp_path / "home", tmp_path / "copy")
    original = sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in (tmp_path / "home").rglob("*"))

    monkeypatch.setenv("MHMOE_HOME", str(tmp_path / "copy"))
    assert main(["train", *short, "--max-steps", "4", "--resume", run.info.run_id]) == 0  # trains steps 3-4
    assert sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in (tmp_path / "home").rglob("*")) == original
    final = tmp_path / "copy" / "checkpoints" / "runs" / run.info.run_id / "final.ckpt"
    assert torch.load(final, weights_only=True)["global_step"] == 4
