"""``mhmoe ui`` stops its whole server tree on SIGTERM; user task YAMLs cannot run code unasked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mhmoe.evaluation.task_code import code_running_yamls
from mhmoe.evaluation.task_manager import EvalError, select_tasks

REPO = Path(__file__).resolve().parents[1]

# A stand-in for `mlflow server`: a parent that starts a worker child, as gunicorn does; both
# write their pid and sleep. Run through the real serve_until_stopped in a real process.
SERVER_TREE = textwrap.dedent("""
    import subprocess, sys, time, pathlib
    out = pathlib.Path(sys.argv[1])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    out.write_text(f"{child.pid}\\n")
    time.sleep(300)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie that its parent has not reaped yet is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_to_ui_stops_the_whole_server_tree(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    wrapper = (f"import os, sys; from mhmoe.commands.ui import serve_until_stopped; "
               f"sys.exit(serve_until_stopped([sys.executable, '-c', {SERVER_TREE!r}, {str(pids)!r}], "
               "dict(os.environ)))")
    ui = subprocess.Popen([sys.executable, "-c", wrapper], cwd=REPO)
    deadline = time.monotonic() + 30
    while not (pids.is_file() and pids.read_text().strip()):
        assert time.monotonic() < deadline, "the stand-in server did not start"
        time.sleep(0.05)
    child = int(pids.read_text())
    ui.send_signal(signal.SIGTERM)
    assert ui.wait(timeout=20) == 0
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the server's worker outlived mhmoe ui"
        time.sleep(0.05)


def test_function_tasks_need_the_opt_in(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text("def process_docs(dataset):\n    return dataset\n")
    (tasks / "base.yaml").write_text("process_docs: !function utils.process_docs\n")
    (tasks / "mine.yaml").write_text("include: base.yaml\ntask: mine\n")
    plain = tmp_path / "plain.yaml"
    plain.write_text("task: plain\n")
    # Found through a folder, and through the include of a file given alone.
    assert code_running_yamls([tasks]) == [(tasks / "base.yaml").resolve()]
    assert code_running_yamls([tasks / "mine.yaml"]) == [(tasks / "base.yaml").resolve()]
    assert code_running_yamls([plain]) == []
    for specs, include in (([str(tasks)], ()), (["mine"], (tasks,)), ([str(tasks / "mine.yaml")], ())):
        with pytest.raises(EvalError, match=r"uses !function .* --allow-task-code"):
            select_tasks(specs, include)
