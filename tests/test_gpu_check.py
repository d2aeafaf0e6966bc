"""``benchmarks/gpu_check.py``: without CUDA it says so and exits 0; its verdict lines and MLflow checks;
``--cpu-dry-run`` runs the user-path parts (train, resume, sweep worker) for real at debug size."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = _load_script()


def _script(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args", [(), ("--full",)])
def test_without_cuda_it_says_so_and_exits_0(args: tuple[str, ...]) -> None:
    result = _script(*args)
    assert (result.returncode, result.stdout.strip()) == (0, gpu_check.NO_CUDA), result.stderr


def test_verdict_lines_parse_and_any_fail_exits_1() -> None:
    text = ("device: H200\nPASS train smoe: 40 steps in 31 s; MFU 30.1%\nwarning: something\n"
            "SKIP resume: part 'train smoe' did not leave a run to resume\nFAIL sweep worker: exit 1: boom (log: x)\n")
    verdicts = gpu_check.parse_verdicts(text)
    assert [(v.status, v.part) for v in verdicts] == [("PASS", "train smoe"), ("SKIP", "resume"),
                                                      ("FAIL", "sweep worker")]
    assert verdicts[2].detail == "exit 1: boom (log: x)"
    assert [gpu_check.parse_verdicts(v.line()) for v in verdicts] == [[v] for v in verdicts]
    assert gpu_check.exit_code(verdicts) == 1
    assert gpu_check.exit_code(verdicts[:2]) == 0


def test_run_problems_names_a_repeated_step_a_missing_step_and_missing_perf_metrics(tmp_path: Path) -> None:
    """A real MLflow run as a resume that re-logged step 4 and skipped step 6 would leave it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("x", artifact_location=str(tmp_path / "art"))).info.run_id
    for step, loss in [(1, 6.2), (2, 6.1), (4, 6.0), (4, 6.0), (8, 5.8)]:
        client.log_metric(run_id, "train/loss", loss, step=step)
    client.set_terminated(run_id, "FINISHED")
    problems = "\n".join(gpu_check.run_problems(uri, run_id, steps=8, log_every=2))
    assert "not strictly increasing" in problems and "missing [6]" in problems
    assert "perf/mfu: not logged" in problems and "memory.estimate_gib" in problems

    good = client.create_run(client.get_experiment_by_name("x").experiment_id).info.run_id
    for step in (1, 2, 4, 6, 8):
        client.log_metric(good, "train/loss", 6.0, step=step)
        client.log_metric(good, "perf/mfu", 0.3, step=step)
        client.log_metric(good, "perf/peak_memory_gib", 1.5, step=step)
    client.log_param(good, "memory.estimate_gib", 1.6)
    client.set_terminated(good, "FINISHED")
    assert gpu_check.run_problems(uri, good, steps=8, log_every=2) == []


@pytest.mark.slow  # 1.5-2.5 min on 2 shared cores: five mhmoe commands
def test_cpu_dry_run_passes_every_user_path_part(seeded_home, tmp_path: Path) -> None:
    home = seeded_home(tmp_path / "home")
    result = _script("--cpu-dry-run", "--home", str(home), timeout=290)
    assert result.returncode == 0, result.stdout + result.stderr
    verdicts = gpu_check.parse_verdicts(result.stdout)
    assert [(v.status, v.part) for v in verdicts] == [
        ("PASS", "train smoe"), ("PASS", "train mhmoe-h3"), ("PASS", "resume"), ("PASS", "sweep worker"),
        ("SKIP", "model")], result.stdout
