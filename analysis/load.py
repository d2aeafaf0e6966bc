"""MLflow -> pandas: the runs of one sweep, their metric histories and routing artifacts.

Everything else in ``analysis/`` takes the frames returned here, so this is the only module that
talks to a tracking server. Works on any tracking URI (sqlite, PostgreSQL, HTTP).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.frame import METRIC, PARAM, TAG, annotate, coerce_param
from mhmoe.tracking import names
from mhmoe.tracking.client import mlflow_client

_PAGE = 1000
_ARTIFACT_STEP = re.compile(r"^(?P<kind>load|divergence)_step(?P<step>\d+)\.npy$")


def _tag_filter(tags: dict[str, str]) -> str:
    # Backticks because our tag names contain dots.
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())


def search(tracking_uri: str | None, tags: dict[str, str], experiment_ids: list[str] | None = None) -> list:
    """Every active run carrying ``tags`` in the given (default: all) experiments."""
    client = mlflow_client(tracking_uri)
    if experiment_ids is None:
        experiment_ids = _all_experiment_ids(client)
    runs, token = [], None
    while experiment_ids:
        page = client.search_runs(experiment_ids, _tag_filter(tags), max_results=_PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return runs


def _all_experiment_ids(client) -> list[str]:
    ids, token = [], None
    while True:
        page = client.search_experiments(max_results=_PAGE, page_token=token)
        ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            return ids


def _row(run) -> dict:
    info, data = run.info, run.data
    row = {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": info.status,
        "start_time": pd.to_datetime(info.start_time, unit="ms") if info.start_time else pd.NaT,
        "end_time": pd.to_datetime(info.end_time, unit="ms") if info.end_time else pd.NaT,
        "parent_run_id": data.tags.get("mlflow.parentRunId"),
    }
    row.update({PARAM + k: v for k, v in data.params.items()})
    row.update({METRIC + k: v for k, v in data.metrics.items()})
    row.update({TAG + k: v for k, v in data.tags.items()})
    return row


def runs_frame(runs: list) -> pd.DataFrame:
    """MLflow ``Run`` objects -> tidy frame (params coerced to numbers where they look numeric)."""
    frame = pd.DataFrame([_row(r) for r in runs])
    if frame.empty:
        return pd.DataFrame(columns=["run_id", "run_name", "experiment_id", "status", "start_time",
                                     "end_time", "parent_run_id"])
    for c in frame.columns:
        if c.startswith(PARAM):
            frame[c] = coerce_param(frame[c])
        elif c.startswith(METRIC):
            frame[c] = pd.to_numeric(frame[c], errors="coerce")
    ordered = ([c for c in frame.columns if not c.startswith((PARAM, METRIC, TAG))]
               + sorted(c for c in frame.columns if c.startswith(PARAM))
               + sorted(c for c in frame.columns if c.startswith(METRIC))
               + sorted(c for c in frame.columns if c.startswith(TAG)))
    return frame[ordered].sort_values(["start_time", "run_id"]).reset_index(drop=True)


def load_runs(
    sweep: str,
    tracking_uri: str | None = None,
    *,
    role: str | None = names.ROLE_TRIAL,
    experiment_ids: list[str] | None = None,
) -> pd.DataFrame:
    """One annotated row per run of ``sweep`` (tag ``mhmoe.sweep``), by default its trials only.

    Columns: run_id, run_name, experiment_id, status, start/end time, parent_run_id,
    ``params/<key>``, ``metrics/<key>`` (the last logged value), ``tags/<key>`` and the grouping
    columns of :func:`analysis.frame.annotate`. ``frame.attrs["tracking_uri"]`` records the store.
    """
    tags = {names.TAG_SWEEP: sweep}
    if role is not None:
        tags[names.TAG_ROLE] = role
    frame = annotate(runs_frame(search(tracking_uri, tags, experiment_ids)))
    frame.attrs.update(sweep=sweep, tracking_uri=mlflow_client(tracking_uri).tracking_uri)
    return frame


def find_parent_run(sweep: str, tracking_uri: str | None = None) -> str | None:
    """Run id of the sweep's parent run (``mhmoe.role=sweep``), the newest if several."""
    runs = search(tracking_uri, {names.TAG_SWEEP: sweep, names.TAG_ROLE: names.ROLE_SWEEP})
    if not runs:
        return None
    return max(runs, key=lambda r: r.info.start_time or 0).info.run_id


def run_tag(run_id: str, key: str, tracking_uri: str | None = None) -> str | None:
    """One tag of one run (e.g. the command that created a sweep's parent run)."""
    return mlflow_client(tracking_uri).get_run(run_id).data.tags.get(key)


def run_param(run_id: str, key: str, tracking_uri: str | None = None) -> str | None:
    """One param of one run (e.g. the metric a sweep's parent run records)."""
    return mlflow_client(tracking_uri).get_run(run_id).data.params.get(key)


def load_histories(runs: pd.DataFrame, keys: list[str], tracking_uri: str | None = None) -> pd.DataFrame:
    """Long frame (run_id, key, step, value, timestamp) of every logged value of ``keys``."""
    client = mlflow_client(tracking_uri or runs.attrs.get("tracking_uri"))
    rows = [
        (run_id, key, m.step, m.value, m.timestamp)
        for run_id in runs["run_id"]
        for key in keys
        for m in client.get_metric_history(run_id, key)
    ]
    frame = pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])
    return frame.astype({"step": "int64", "value": "float64"})


def load_routing_arrays(
    runs: pd.DataFrame, kind: str, tracking_uri: str | None = None
) -> dict[str, tuple[int, np.ndarray]]:
    """``run_id -> (step, array)`` from the last-step ``routing/<kind>_step*.npy`` of each run.

    ``kind`` is ``load`` (MoE layers x experts counts) or ``divergence`` (MoE layers x heads
    histogram). Runs without the artifact are left out.
    """
    client = mlflow_client(tracking_uri or runs.attrs.get("tracking_uri"))
    out: dict[str, tuple[int, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run_id in runs["run_id"]:
            steps = {}
            for info in client.list_artifacts(run_id, names.LOAD_ARTIFACT_DIR):
                m = _ARTIFACT_STEP.match(Path(info.path).name)
                if m and m.group("kind") == kind:
                    steps[int(m.group("step"))] = info.path
            if not steps:
                continue
            step = max(steps)
            local = client.download_artifacts(run_id, steps[step], os.path.join(tmp, run_id))
            out[run_id] = (step, np.load(local))
    return out


def log_files_to(run_id: str, files: list[Path], artifact_path: str, tracking_uri: str | None = None) -> None:
    """Upload files as artifacts of ``run_id`` (the sweep's parent run gets the report).

    File by file rather than the whole folder: ``--out`` may point at a folder holding other things.
    """
    client = mlflow_client(tracking_uri)
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path)
