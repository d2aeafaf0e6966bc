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
