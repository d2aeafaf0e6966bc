"""Fixtures for the analysis tests: one real sqlite MLflow store per session, one report per module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.analysis.analysis_synthetic import build_store


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return build_store(tmp_path_factory.mktemp("mlflow_store"))


@pytest.fixture(scope="session")
def synth_runs(store: dict):
    from analysis.load import load_runs

    return load_runs("synth", store["uri"])


@pytest.fixture(scope="session")
def synth_report(store: dict, tmp_path_factory: pytest.TempPathFactory):
    """The full report of the synth sweep, written once (it is the slow part: ~15 s)."""
    from analysis.report import write_report
    from mhmoe.commands.report import sweep_ref

    out_dir = tmp_path_factory.mktemp("report") / "synth"
    command = f"mhmoe report {store['specs'] / 'synth.yaml'} --out {out_dir}"
    return write_report(sweep_ref(store["specs"] / "synth.yaml"), out_dir, command=command)


@pytest.fixture()
def spec_dir(store: dict) -> Path:
    return store["specs"]
