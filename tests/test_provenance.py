"""The commit a report names for its own code: dirty only for changes outside ``reports/``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mhmoe.tracking import provenance


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = tmp_path / "repo"
    (repo / "reports" / "sweep").mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "reports" / "sweep" / "index.md").write_text("# old report\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(provenance, "REPO", repo)
    return repo


def test_report_rewriting_its_own_folder_is_not_a_dirty_checkout(checkout: Path) -> None:
    sha = _git(checkout, "rev-parse", "HEAD")
    (checkout / "reports" / "sweep" / "index.md").unlink()  # what a report does before writing its index
    assert provenance.git_commit(describe=True) == sha
    (checkout / "code.py").write_text("x = 2\n")
    assert provenance.git_commit(describe=True) == f"{sha} (with uncommitted changes)"
    assert provenance.git_commit() == sha  # run tags: the bare SHA
