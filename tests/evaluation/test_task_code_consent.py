"""Task YAMLs that make lm-eval run Python need consent in ``mhmoe eval``, sweep specs and ``mhmoe lm-eval``.

What counts as lm-eval's ``!function`` is decided by the YAML parser, not by the text: each
spelling below resolves to ``!function`` in lm-eval's own loader, and two of them do not contain
the text ``!function`` at all, so a text search would let them through.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from mhmoe.cli import main as mhmoe_main
from mhmoe.evaluation.task_code import FUNCTION_TAG, LM_EVAL_BASE_LOADER, task_code
from mhmoe.evaluation.task_manager import EvalError, check_no_task_code, user_task_paths
from tests.evaluation.untrained import VARIANTS, write_untrained_checkpoint
from tests.sweep.conftest import debug_spec

# name -> (YAML directives before the document, the tag as written); each resolves to !function.
SPELLINGS = {
    "plain": ("", "!function"),
    "uri_escaped": ("", "!%66unction"),
    "tag_handle": ("%TAG !e! !\n---\n", "!e!function"),
    "tag_prefix": ("%TAG !e! !fun\n---\n", "!e!ction"),
    "verbatim": ("", "!<!function>"),
}
GREP_PROOF = ("uri_escaped", "tag_prefix")
"""Spellings without the text ``!function``: what the old text search missed."""

UTILS = ("import pathlib\n"
         "pathlib.Path(__file__).with_name('ran').write_text('imported')\n"
         "def process_docs(dataset):\n    return dataset\n")
TASK = "task: mine\ndataset_path: json\noutput_type: loglikelihood\ndoc_to_text: '{{q}}'\ndoc_to_target: a\n"


def task_folder(root: Path, spelling: str | None) -> Path:
    """A task folder whose utils.py leaves a file ``ran`` when imported; ``None``: no code tag."""
    folder = root / f"tasks_{spelling or 'clean'}"
    folder.mkdir()
    (folder / "utils.py").write_text(UTILS)
    if spelling is None:
        (folder / "mine.yaml").write_text(TASK)
    else:
        directives, tag = SPELLINGS[spelling]
        (folder / "mine.yaml").write_text(f"{directives}{TASK}process_docs: {tag} utils.process_docs\n")
    return folder


def one_line_naming(err: str, folder: Path, tag: str, consent: str) -> bool:
    line = err.strip()
    return "\n" not in line and str((folder / "mine.yaml").resolve()) in line and tag in line and consent in line


def test_the_detector_uses_lm_evals_loader_base() -> None:
    from lm_eval.tasks._yaml_loader import _Base

    assert LM_EVAL_BASE_LOADER is _Base


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_every_spelling_is_lm_evals_function_and_is_found(spelling: str, tmp_path: Path) -> None:
    from lm_eval.tasks._yaml_loader import load_yaml

    folder = task_folder(tmp_path, spelling)
    # lm-eval itself reads the tag as !function: unresolved, it becomes the function's path.
    assert load_yaml(folder / "mine.yaml", resolve_func=False)["process_docs"] == str(folder / "utils.process_docs")
    [found] = task_code([folder])
    assert (found.path, found.tag, found.written) == ((folder / "mine.yaml").resolve(), FUNCTION_TAG,
                                                      SPELLINGS[spelling][1])


@pytest.mark.parametrize("spelling", GREP_PROOF)
def test_the_old_text_search_missed_these(spelling: str, tmp_path: Path) -> None:
    text = (task_folder(tmp_path, spelling) / "mine.yaml").read_text()
    assert "!function" not in text and not re.search(r"!function\b", text)


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_mhmoe_eval_refuses_task_code_without_consent(spelling: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = task_folder(tmp_path, spelling)
    missing = str(tmp_path / "none.ckpt")  # refused before the checkpoint is read
    for tasks in (["--tasks", str(folder)], ["--tasks", str(folder / "mine.yaml")],
                  ["--tasks", "mine", "--include-path", str(folder)]):
        assert mhmoe_main(["eval", missing, *tasks]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mhmoe eval: task YAML ")
        assert one_line_naming(err, folder, SPELLINGS[spelling][1], "--allow-task-code"), err
        # With consent the gate is passed: the next check (the checkpoint) speaks.
        assert mhmoe_main(["eval", missing, *tasks, "--allow-task-code"]) == 2
        err = capsys.readouterr().err
        assert "none.ckpt does not exist" in err and "task YAML" not in err, err
    # The path sweep workers take (evaluate_checkpoint -> select_tasks) refuses it too.
    with pytest.raises(EvalError, match=re.escape(SPELLINGS[spelling][1])):
        check_no_task_code(user_task_paths([str(folder)]), allow_code=False)
    assert not (folder / "ran").exists()


def _spec(tmp_path: Path, folder: Path, **eval_section: object) -> Path:
    return debug_spec(tmp_path / "spec.yaml", name="taskcode", grid={"seed": [0]},
                      eval={"tasks": [str(folder)], **eval_section})


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_sweep_submit_refuses_a_spec_naming_task_code(spelling: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from mhmoe.commands.sweep import main as sweep_main

    folder = task_folder(tmp_path, spelling)
    spec = _spec(tmp_path, folder)
    stores = ["--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
              "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    for action in ("submit", "run"):
        assert sweep_main([action, str(spec), *stores]) == 2
        err = capsys.readouterr().err
        assert one_line_naming(err, folder, SPELLINGS[spelling][1], "eval.allow_code: true"), err
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()
    assert not (folder / "ran").exists()


def test_sweep_submit_accepts_a_clean_folder_and_consent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mhmoe.commands.sweep import main as sweep_main

    clean, code = task_folder(tmp_path, None), task_folder(tmp_path, "uri_escaped")
    for folder, consent in ((clean, {}), (code, {"allow_code": True})):
        storage = tmp_path / f"{folder.name}.db"
        spec = _spec(tmp_path, folder, **consent)
        assert sweep_main(["submit", str(spec), "--storage", f"sqlite:///{storage}",
                           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 0, capsys.readouterr().err
        assert storage.exists() and "enqueued" in capsys.readouterr().out
    assert yaml.safe_load(spec.read_text())["eval"]["allow_code"] is True


def lm_eval_args(tmp_path: Path, *tasks: str) -> list[str]:
    """A real (untrained) checkpoint: ``mhmoe lm-eval`` reads it before it runs lm-eval."""
    checkpoint = tmp_path / "untrained.ckpt"
    if not checkpoint.is_file():
        write_untrained_checkpoint(checkpoint, VARIANTS["dense"])
    return ["--model", "mhmoe", "--model_args", f"pretrained={checkpoint}", *tasks]


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_mhmoe_lm_eval_refuses_task_code_without_the_flag(spelling: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import lm_eval.__main__

    calls: list[list[str]] = []
    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", lambda: calls.append(list(sys.argv)))
    folder = task_folder(tmp_path, spelling)
    for tasks in (["--tasks", "mine", "--include_path", str(folder)], ["--tasks", "mine", f"--include_path={folder}"],
                  ["--tasks", "mine", "--include", str(folder)],  # lm-eval's parser takes the abbreviation
                  ["-t", str(folder / "mine.yaml")], ["--tasks", str(folder)]):
        assert mhmoe_main(["lm-eval", *lm_eval_args(tmp_path, *tasks)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mhmoe lm-eval: task YAML ")
        assert one_line_naming(err, folder, SPELLINGS[spelling][1], "--allow-task-code"), err
    assert calls == [] and not (folder / "ran").exists()
    # With the flag lm-eval's CLI runs, without mhmoe's flag in its arguments.
    args = lm_eval_args(tmp_path, "--tasks", "mine", "--include_path", str(folder))
    assert mhmoe_main(["lm-eval", "--allow-task-code", *args]) == 0
    assert "task YAML" not in capsys.readouterr().err
    [passed] = calls
    assert passed[:len(args) + 1] == ["lm-eval", *args] and "--allow-task-code" not in passed


def test_mhmoe_lm_eval_passes_a_clean_folder_to_lm_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import lm_eval.__main__

    calls: list[bool] = []
    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", lambda: calls.append(True))
    folder = task_folder(tmp_path, None)
    assert mhmoe_main(["lm-eval", *lm_eval_args(tmp_path, "--tasks", "mine", "--include_path", str(folder))]) == 0
    assert calls == [True] and "task YAML" not in capsys.readouterr().err
    # mhmoe eval: the gate lets it through to the checkpoint check.
    assert mhmoe_main(["eval", str(tmp_path / "none.ckpt"), "--tasks", str(folder)]) == 2
    assert "none.ckpt does not exist" in capsys.readouterr().err


def test_other_tags_and_unparsable_files_need_consent_too(tmp_path: Path) -> None:
    folder = tmp_path / "tasks"
    (folder / "deep").mkdir(parents=True)
    (folder / "deep" / "odd.yml").write_text("task: odd\nfn: !!python/name:os.system\n")
    (folder / "broken.yaml").write_text("task: [broken\n")
    (folder / "uses.yaml").write_text("task: uses\ninclude: ../outside.yaml\n")
    (tmp_path / "outside.yaml").write_text("process_docs: !%66unction utils.process_docs\n")
    found = {f.path.name: f.describe() for f in task_code([folder])}
    assert set(found) == {"odd.yml", "broken.yaml", "outside.yaml"}  # outside.yaml: reached by include
    assert "!!python/name:os.system" in found["odd.yml"] and "does not parse" in found["broken.yaml"]
    for name in ("broken.yaml", "deep/odd.yml"):
        with pytest.raises(EvalError, match=r"^task YAML \S+" + re.escape(name) + " .*--allow-task-code"):
            check_no_task_code([folder / name], allow_code=False)
    check_no_task_code([folder], allow_code=True)
