"""Project-wide test setup: every test session gets its own MHMOE_HOME and tracking store."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Point MHMOE_HOME at a session temp dir unless the caller chose one (shares downloads)."""
    if not os.environ.get("MHMOE_TEST_KEEP_HOME"):
        os.environ["MHMOE_HOME"] = str(tmp_path_factory.mktemp("mhmoe_home"))
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture
def tiny_disk(tmp_path_factory: pytest.TempPathFactory):
    """A real 1 MB file system (tmpfs), smaller than one debug checkpoint; skipped unless root can mount it."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path_factory.mktemp("tiny_disk")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.fixture(scope="session")
def seeded_home():
    """``seed(home)``: a new MHMOE_HOME at ``home`` holding the debug preset's data caches (corpus,
    tokenizer, token streams), filled once per session: a fresh home's first run skips rebuilding them."""
    import shutil
    from pathlib import Path

    from mhmoe.config.run import resolve_run_config
    from mhmoe.data.datamodule import MHMoEDataModule

    cfg = resolve_run_config("debug")
    MHMoEDataModule(cfg.data, seq_len=cfg.train.seq_len, batch_size=cfg.train.batch_size, seed=cfg.seed,
                    max_steps=cfg.train.max_steps).prepare_data()
    session_home = Path(os.environ["MHMOE_HOME"])

    def seed(home: Path) -> Path:
        for cache in ("downloads", "data", "tokenizers", "tokens"):
            if (session_home / cache).is_dir():
                shutil.copytree(session_home / cache, home / cache)
        return home

    return seed
