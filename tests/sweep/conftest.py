"""Sweep test helpers: small debug specs, per-test stores, and the CLI run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.pg_server import postgres_server  # noqa: F401  (re-exported fixture)

REPO = Path(__file__).resolve().parents[2]


def debug_spec(path: Path, *, name: str | None = None, groups: dict | None = None, grid: dict | None = None,
               steps: int = 20, overrides: dict | None = None, **extra: Any) -> Path:
    """Write a tiny spec (debug preset, ~seconds per trial) and return its path; ``grid={}`` writes no grid."""
    data: dict[str, Any] = {
        "base": {"preset": "debug", "overrides": {"train.val_every": 10, "data.val_max_windows": 4,
                                                  "train.log_every": 5, **(overrides or {})}},
        "match": {"policy": "flops", "baseline": "base"},
        "budget": {"steps": steps},
        "validation": {"sets": ["shakespeare"], "metric": "val/shakespeare/ppl"},
        "retries": 1,
        "heartbeat": {"interval": 1, "grace": 4},
        "groups": groups or {"smoe": {"model.ffn": "smoe"}, "mhmoe-h2": {"model.ffn": "mhmoe", "moe.heads": 2}},
        "grid": {"seed": [0]} if grid is None else grid,
        **extra,
    }
    if not data["grid"]:  # grid={}: no axis (a ``seeds:`` schedule then sets the seeds)
        del data["grid"]
    if name:
        data["name"] = name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, str]:
    """A fresh Optuna SQLite store, MLflow store and checkpoint root for one test."""
    return {
        "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        "tracking": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "checkpoints": str(tmp_path / "checkpoints"),
    }


def sweep_cli(*args: str, timeout: float = 300, check: bool = True, **popen: Any) -> subprocess.CompletedProcess:
    """``mhmoe sweep ARGS`` in a real process (workers are real child processes too)."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    result = subprocess.run([sys.executable, "-m", "mhmoe.cli", "sweep", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=timeout, **popen)
    if check and result.returncode != 0:
        raise AssertionError(f"mhmoe sweep {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def warm_data() -> None:
    """Fill the session home's corpus/tokenizer caches once, so concurrent workers only read them."""
    from mhmoe.config.run import resolve_run_config
    from mhmoe.data.datamodule import MHMoEDataModule

    cfg = resolve_run_config("debug", None, {"data.val_sets": ["shakespeare"]})
    MHMoEDataModule(cfg.data, seq_len=cfg.train.seq_len, batch_size=cfg.train.batch_size, seed=0,
                    max_steps=cfg.train.max_steps).prepare_data()


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
