"""The ``mhmoe`` dispatcher, ``mhmoe ui`` and ``mhmoe smoke``."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mhmoe.cli import COMMANDS, main


def test_unknown_command_lists_commands(capsys: pytest.CaptureFixture) -> None:
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "train" in err


def test_every_command_has_help() -> None:
    for name in COMMANDS:
        out = subprocess.run([sys.executable, "-m", "mhmoe.cli", name, "--help"], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, (name, out.stderr)
        assert "usage" in out.stdout.lower()


def test_ui_dry_run_binds_loopback_and_uses_the_store(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run([sys.executable, "-m", "mhmoe.cli", "ui", "--tracking-uri", uri, "--port", "5099",
                          "--dry-run"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "http://127.0.0.1:5099" in out.stdout
    assert "--host 127.0.0.1" in out.stdout and uri in out.stdout


@pytest.mark.slow
def test_ui_serves_the_store(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mhmoe.cli", "ui", "--tracking-uri",
                             f"sqlite:///{tmp_path / 'mlflow.db'}", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_smoke_command_runs_every_variant(capsys: pytest.CaptureFixture) -> None:
    assert main(["smoke", "--preset", "debug", "--tokens", "16"]) == 0
    out = capsys.readouterr().out
    for variant in ("dense", "smoe", "fine_grained", "mhmoe-h2", "mhmoe-h3"):
        assert f"{variant} +BitNet" in out or f"{variant:<20} loss" in out
    assert "mhmoe-h3 +BitNet" in out


def _actions_without_help(parser):
    import argparse

    todo, missing = [(parser.prog, parser)], []
    while todo:
        prog, p = todo.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += list(action.choices.items())
            elif action.help is None:
                missing.append(f"{prog} {action.dest}")
    return missing


def test_every_argument_has_help() -> None:
    from mhmoe.commands import budget, eval as eval_command, sweep, train

    for module in (budget, eval_command, sweep, train):
        assert _actions_without_help(module.build_parser()) == []


def test_version_and_config_listing(capsys: pytest.CaptureFixture) -> None:
    from mhmoe import __version__

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"mhmoe {__version__}"
    assert main(["config", "moe.heads", "--preset", "debug"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("moe.heads  (int; debug: 1)") and "sub-tokens" in out
    assert main(["config", "nothing"]) == 2
    assert "no config key starts with 'nothing'" in capsys.readouterr().err


def test_unknown_keys_and_dashed_keys_get_a_hint(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--preset", "debug", "moe.head=2"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'moe.heads'" in err and "moe.* keys:" in err and "model.d_model" not in err
    assert main(["train", "--preset", "debug", "--moe.heads=2"]) == 2
    assert "config keys take no dashes: write moe.heads=2" in capsys.readouterr().err


def test_dry_run_output_is_a_config_file(tmp_path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--preset", "debug", "moe.heads=1", "optim.lr=0.002", "--dry-run"]) == 0
    first = capsys.readouterr().out
    (tmp_path / "run.yaml").write_text(first)
    assert main(["train", "--preset", "cpu-small", "--config", str(tmp_path / "run.yaml"), "--dry-run"]) == 0
    assert capsys.readouterr().out == first  # every value came from the file, none from the other preset
    assert "# budget.total_params:" in first


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback() -> None:
    """``mhmoe config | head``: the reader is gone before the listing is written."""
    proc = subprocess.Popen([sys.executable, "-m", "mhmoe.cli", "config"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    proc.stdout.close()  # before the child's first write: that write fails with EPIPE
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err and err == b"", err
