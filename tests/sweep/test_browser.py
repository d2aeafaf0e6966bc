"""What a researcher sees in the MLflow UI, in a real browser (slow; needs Debian's ``chromium``).

Runs the smoke sweep, starts ``mhmoe ui`` on its store, renders the sweep's parent run page and
one trial's run page in headless Chromium (``--dump-dom`` after the single-page app has rendered)
and checks the answers are on the page: the parent's verdict (description, winner tag, one metric
per comparison) and per-variant summary metrics, the trial's val ppl and its variant. Install the
browser with ``MHMOE_SETUP_BROWSER=1 bin/setup --test``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from mhmoe.tracking import names
from tests.sweep.conftest import REPO, sweep_cli

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rendered(url: str) -> str:
    """The page's DOM after its scripts ran (MLflow's UI renders client-side)."""
    out = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return out.stdout


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no chromium (MHMOE_SETUP_BROWSER=1 bin/setup --test installs it)")
def test_mlflow_ui_shows_the_sweep_summary_and_trial_results(warm_data, tmp_path: Path,
                                                             stores: dict[str, str]) -> None:
    sweep_cli("run", "smoke", "--workers", "2", "--storage", stores["storage"], "--tracking-uri", stores["tracking"],
              "--checkpoint-root", stores["checkpoints"], "--poll", "1", "--no-report", timeout=900)
    client = mlflow.MlflowClient(stores["tracking"])
    experiment = client.get_experiment_by_name("smoke").experiment_id
    (parent,) = client.search_runs([experiment], f"tags.`{names.TAG_ROLE}` = '{names.ROLE_SWEEP}'")
    child = client.search_runs([experiment], f"tags.`{names.TAG_ROLE}` = '{names.ROLE_TRIAL}' and "
                                             f"tags.`{names.TAG_VARIANT}` = 'mhmoe-h2'")[0]
    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "mhmoe.cli", "ui", "--tracking-uri", stores["tracking"],
                           "--port", str(port)], cwd=REPO, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "mhmoe ui did not answer"
                time.sleep(0.5)
        base = f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs"
        parent_page = _rendered(f"{base}/{parent.info.run_id}")
        # the per-variant means: a table in the description
        assert "mean val/" in parent_page
        # who won, where the user looks first: the description opens with the verdict table
        verdicts = sorted(key for key in parent.data.metrics if key.startswith("verdict/"))
        assert verdicts and verdicts[0] in parent_page
        assert "comparison(s) resolved" in parent_page and "Δ vs baseline" in parent_page
        assert names.TAG_WINNER in parent_page and parent.data.tags[names.TAG_WINNER] in parent_page
        child_page = _rendered(f"{base}/{child.info.run_id}")
        assert "val/shakespeare/ppl" in child_page and "mhmoe-h2" in child_page
        assert f"{child.data.metrics['val/shakespeare/ppl']:.4g}"[:4] in child_page
    finally:
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=30) == 0
