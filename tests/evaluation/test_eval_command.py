"""``evaluate_checkpoint`` and ``mhmoe eval``: real lm-eval over the shipped tasks, logged to MLflow."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mhmoe.commands.eval import main
from mhmoe.evaluation.local_tasks import TEMPLATE_DIR
from mhmoe.evaluation.results import RESULTS_ARTIFACT
from mhmoe.evaluation.runner import evaluate_checkpoint
from mhmoe.training.checkpoint import run_of
from mhmoe.training.result import TrainResult
from tests.evaluation.trained import train_debug_checkpoint

LOCAL_TASKS = ["mhmoe_gen", "mhmoe_heldout_ppl", "mhmoe_mc"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train_debug_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_local_tasks_run_and_land_in_the_checkpoints_mlflow_run(trained: TrainResult, tmp_path: Path) -> None:
    results = evaluate_checkpoint(trained.checkpoint_path, LOCAL_TASKS, limit=6, batch_size=8)

    scores = results["results"]
    assert sorted(scores) == LOCAL_TASKS
    expected = {"mhmoe_mc": ["acc,none", "acc_norm,none"], "mhmoe_gen": ["exact_match,none"],
                "mhmoe_heldout_ppl": ["word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"]}
    for task, keys in expected.items():
        for key in keys:
            assert math.isfinite(scores[task][key]), (task, key, scores[task][key])
    ppl = scores["mhmoe_heldout_ppl"]
    assert ppl["bits_per_byte,none"] == pytest.approx(math.log2(ppl["byte_perplexity,none"]), rel=1e-6)
    assert 1.0 < ppl["byte_perplexity,none"] < 256.0  # a 40-step model: better than uniform over bytes
    assert results["n-samples"]["mhmoe_mc"]["effective"] == 6

    run_id, tracking_uri = run_of(trained.checkpoint_path)
    assert run_id == trained.run_id
    client = MlflowClient(tracking_uri)
    logged = client.get_run(run_id).data.metrics
    for task, keys in expected.items():
        for key in keys:
            name = f"eval/{task}/{key.split(',')[0]}"
            assert logged[name] == pytest.approx(scores[task][key]), name
    assert "eval/mhmoe_mc/acc_stderr" in logged
    assert [m.step for m in client.get_metric_history(run_id, "eval/mhmoe_mc/acc")] == [trained.final_step]
    saved = json.loads(Path(client.download_artifacts(run_id, RESULTS_ARTIFACT, str(tmp_path))).read_text())
    assert saved["results"]["mhmoe_mc"]["acc,none"] == scores["mhmoe_mc"]["acc,none"]
    assert saved["config"]["model"] == "mhmoe" and saved["config"]["mlflow_run_id"] == run_id


def test_cli_prints_the_results_table(trained: TrainResult, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(trained.checkpoint_path), "--tasks", "mhmoe_mc", "--limit", "4", "--no-log"]) == 0
    out = capsys.readouterr().out
    assert "|mhmoe_mc" in out and "acc_norm" in out and "Metric" in out


def test_list_tasks_prints_the_shipped_task_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-tasks"]) == 0
    assert capsys.readouterr().out.split() == LOCAL_TASKS


def test_a_task_directory_is_included_and_its_tasks_run(trained: TrainResult, tmp_path: Path) -> None:
    template = (TEMPLATE_DIR / "mhmoe_mc.yaml").read_text()
    (tmp_path / "my_cloze.yaml").write_text(
        template.replace("task: mhmoe_mc", "task: my_cloze").replace("@PACKAGE_DATA@", TEMPLATE_DIR.as_posix())
        .replace("@DATASETS_CACHE@", (tmp_path / "cache").as_posix()))
    results = evaluate_checkpoint(trained.checkpoint_path, str(tmp_path), limit=3, log=False)
    assert sorted(results["results"]) == ["my_cloze"]


def test_standard_task_offline_fails_fast_naming_the_dataset(
    trained: TrainResult, capsys: pytest.CaptureFixture[str]
) -> None:
    start = time.perf_counter()
    assert main([str(trained.checkpoint_path), "--tasks", "hellaswag", "--no-log"]) == 2
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert err.startswith("mhmoe eval: ") and "\n" not in err
    assert "Rowan/hellaswag" in err and "--online" in err
    assert elapsed < 15, f"took {elapsed:.1f}s: the full built-in task index (~16 s) should not be needed"


def test_not_a_checkpoint_is_bad_input_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("a plain text file\n")
    assert main([str(notes), "--tasks", "mhmoe_mc"]) == 2
    assert "is not a safe, readable torch checkpoint" in capsys.readouterr().err


def test_an_unknown_mlflow_run_is_refused_before_evaluating(
    trained: TrainResult, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(trained.checkpoint_path), "--tasks", "mhmoe_mc", "--run-id", "0" * 32]) == 2
    assert f"MLflow run {'0' * 32} not found" in capsys.readouterr().err


@pytest.mark.slow
def test_unknown_task_is_named(trained: TrainResult, capsys: pytest.CaptureFixture[str]) -> None:
    # Unknown names fall back to lm-eval's full built-in index (~16 s) before they can be refused.
    assert main([str(trained.checkpoint_path), "--tasks", "no_such_task_xyz", "--no-log"]) == 2
    assert "unknown task(s) ['no_such_task_xyz']" in capsys.readouterr().err


def test_stock_lm_eval_cli_runs_the_mhmoe_model_on_a_shipped_task(trained: TrainResult, tmp_path: Path) -> None:
    """``mhmoe lm-eval`` is lm-eval's own CLI: its flags pass through, the model and tasks are found."""
    import subprocess
    import sys

    out = tmp_path / "lm_eval_out"
    cmd = [sys.executable, "-m", "mhmoe.cli", "lm-eval", "--model", "mhmoe", "--model_args",
           f"pretrained={trained.checkpoint_path}", "--tasks", "mhmoe_mc", "--limit", "4", "--num_fewshot", "0",
           "--batch_size", "4", "--output_path", str(out), "--log_samples"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mhmoe_mc" in done.stdout and "acc" in done.stdout  # lm-eval's own results table
    results = sorted(out.rglob("results_*.json"))
    assert results, sorted(str(p) for p in out.rglob("*"))
    data = json.loads(results[-1].read_text())
    assert 0.0 <= data["results"]["mhmoe_mc"]["acc,none"] <= 1.0
    assert sorted(out.rglob("samples_mhmoe_mc_*.jsonl"))  # --log_samples passed through


def test_lm_eval_argv_adds_the_shipped_tasks_and_the_cpu_only_where_the_user_chose_nothing() -> None:
    from mhmoe.commands.lm_eval import lm_eval_argv

    user = ["--model", "mhmoe", "--tasks", "mhmoe_mc"]
    assert lm_eval_argv(user, "/t", has_gpu=False) == ["lm-eval", *user, "--include_path", "/t", "--device", "cpu"]
    assert lm_eval_argv(user, "/t", has_gpu=True) == ["lm-eval", *user, "--include_path", "/t"]
    mine = [*user, "--include_path=/mine", "--device", "cuda"]  # explicit choices are the user's (cuda: a clear error)
    assert lm_eval_argv(mine, "/t", has_gpu=False) == ["lm-eval", *mine]
    assert lm_eval_argv(["--help"], "/t", has_gpu=False) == ["lm-eval", "--help"]


def test_eval_logs_into_the_current_store_not_the_one_recorded_at_training(
        trained: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copied home (here: a copy of its MLflow database) logs into itself; --tracking-uri wins."""
    import shutil

    from mhmoe.evaluation.runner import resolve_run
    from mhmoe.evaluation.task_manager import EvalError

    run_id, recorded = run_of(trained.checkpoint_path)
    copy = tmp_path / "copied.db"
    shutil.copy(recorded.removeprefix("sqlite:///"), copy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{copy}")  # what the copied home's default is
    assert resolve_run(trained.checkpoint_path, None, None) == (run_id, f"sqlite:///{copy}")
    assert resolve_run(trained.checkpoint_path, None, recorded) == (run_id, recorded)
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(EvalError, match="pass --tracking-uri"):
        resolve_run(trained.checkpoint_path, None, empty)



@pytest.mark.slow
def test_lm_eval_refuses_a_gpu_this_machine_lacks_with_exit_2(trained: TrainResult,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The adapter's refusal comes after lm-eval has indexed its tasks (~16 s): a ValueError, exit 2."""
    import torch

    from mhmoe.cli import main as mhmoe_main

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert mhmoe_main(["lm-eval", "--model", "mhmoe", "--model_args", f"pretrained={trained.checkpoint_path}",
                       "--device", "cuda", "--tasks", "mhmoe_mc", "--limit", "1"]) == 2
    assert "mhmoe lm-eval: device='cuda' requested but torch sees no CUDA GPU" in capsys.readouterr().err


def test_exported_folder_under_stock_lm_eval_hf_scores_as_mhmoe_eval(trained: TrainResult, tmp_path: Path) -> None:
    """``mhmoe export``, then lm-eval's own ``hf`` model (what ``lm_eval --model hf --model_args
    pretrained=DIR,trust_remote_code=True`` builds) on shipped tasks: ``mhmoe eval``'s scores, and the
    mhmoe model's own log-likelihoods and generations sample by sample."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from mhmoe.commands.export import main as export_main
    from mhmoe.evaluation.local_tasks import render_local_tasks

    folder = tmp_path / "hf"
    assert export_main([str(trained.checkpoint_path), str(folder)]) == 0
    # Weights only: the checkpoint also carries AdamW's two moments and the loop state.
    assert (folder / "model.safetensors").stat().st_size < trained.checkpoint_path.stat().st_size / 2
    tasks = ["mhmoe_mc", "mhmoe_gen"]
    ours = evaluate_checkpoint(trained.checkpoint_path, tasks, limit=8, batch_size=4, log=False)
    manager = TaskManager(include_path=str(render_local_tasks()), include_defaults=False)
    runs = {model: simple_evaluate(model=model, model_args=f"pretrained={path}{extra}", tasks=tasks,
                                   task_manager=manager, limit=8, batch_size=4, device="cpu", log_samples=True)
            for model, path, extra in [("hf", folder, ",trust_remote_code=True"),
                                       ("mhmoe", trained.checkpoint_path, "")]}
    stock = runs["hf"]
    for task, metric in [("mhmoe_mc", "acc,none"), ("mhmoe_mc", "acc_norm,none"), ("mhmoe_gen", "exact_match,none")]:
        assert stock["results"][task][metric] == ours["results"][task][metric], (task, metric)
    for task in tasks:
        got, expected = ({s["doc_id"]: s["filtered_resps"] for s in run["samples"][task]} for run in runs.values())
        assert sorted(got) == sorted(expected) == list(range(8))
        for doc, answers in expected.items():
            if task == "mhmoe_mc":  # [(log-likelihood, is_greedy)] per choice
                assert [g for _, g in got[doc]] == [g for _, g in answers]
                assert [s for s, _ in got[doc]] == pytest.approx([s for s, _ in answers], abs=1e-4)
            else:
                assert got[doc] == answers
