"""Packaging: the distribution lists every package folder and ships the sweep specs.

The slow test builds a wheel of the repository and installs it (not editable) into a temporary venv that
reuses this venv's site-packages for the dependencies, then plans the shipped ``smoke`` spec from a folder
outside the repository: what a user gets from ``pip install .``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from mhmoe.sweep.shipped_specs import CHECKOUT_SPECS_DIR, shipped_specs_dir
from mhmoe.sweep.spec import spec_path

tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (requires-python allows 3.10)

REPO = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
# What a wheel build must not copy from a checkout: VCS data, venvs, build outputs, run stores.
NOT_SOURCE = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "mlruns", "mlflow.db")


def _package_folders() -> set[str]:
    """Every folder of ``mhmoe/`` and ``analysis/`` that holds a file, as a dotted package name."""
    names = set()
    for top in ("mhmoe", "analysis"):
        for folder in [REPO / top, *(p for p in (REPO / top).rglob("*") if p.is_dir())]:
            if folder.name != "__pycache__" and any(f.is_file() and f.suffix != ".pyc" for f in folder.iterdir()):
                names.add(".".join(folder.relative_to(REPO).parts))
    return names


def test_pyproject_lists_every_package_folder_and_maps_the_specs_folder() -> None:
    listed = set(SETUPTOOLS["packages"])
    mapped = SETUPTOOLS["package-dir"]
    assert mapped == {"mhmoe.experiments": "experiments"}
    missing = _package_folders() - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert listed - set(mapped) <= _package_folders(), "pyproject.toml lists a package folder that does not exist"
    assert SETUPTOOLS["package-data"]["mhmoe.experiments"] == ["*.yaml"]


def test_a_checkout_finds_the_shipped_specs_in_the_top_level_experiments_folder() -> None:
    assert shipped_specs_dir() == CHECKOUT_SPECS_DIR == REPO / "experiments"
    assert spec_path("smoke") == REPO / "experiments" / "smoke.yaml"
    assert not (REPO / "experiments" / "__init__.py").exists()


def _run(cmd: list[str], cwd: Path | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd, env=env)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_a_wheel_install_plans_the_shipped_smoke_spec_outside_the_repository(tmp_path: Path) -> None:
    src, dist, venv, elsewhere = (tmp_path / n for n in ("src", "dist", "venv", "elsewhere"))
    shutil.copytree(REPO, src, ignore=NOT_SOURCE)  # a copy: the build writes build/ and *.egg-info beside it
    # --no-build-isolation: the build uses this venv's setuptools, nothing is downloaded.
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index", "--no-build-isolation",
          str(src), "-w", str(dist)])
    (wheel,) = dist.glob("mhmoe-*.whl")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # The dependencies (torch, ...) come from this venv's site-packages, appended after the new venv's own;
    # its .pth files (the editable mhmoe finder among them) are not processed, so mhmoe is the wheel's.
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "project-dependencies.pth").write_text("".join(f"{p}\n" for p in deps))
    # --ignore-installed: through that .pth pip sees the editable mhmoe and would skip the wheel.
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          "--ignore-installed", str(wheel)])

    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MHMOE_HOME"] = str(tmp_path / "home")
    show = "import mhmoe.sweep.shipped_specs as s; print(s.__file__); print(s.shipped_specs_dir())"
    where = _run([str(python), "-c", show], cwd=elsewhere, env=env).stdout.split()
    assert where == [str(site / "mhmoe" / "sweep" / "shipped_specs.py"), str(site / "mhmoe" / "experiments")]
    assert sorted(p.name for p in (site / "mhmoe" / "experiments").iterdir()) == sorted(
        p.name for p in (REPO / "experiments").glob("*.yaml"))
    assert not (site / "experiments").exists()

    plan = _run([str(venv / "bin" / "mhmoe"), "sweep", "plan", "smoke"], cwd=elsewhere, env=env).stdout
    assert plan.startswith("sweep smoke: 8 trials")
    assert "mhmoe-h2/seed=1" in plan
