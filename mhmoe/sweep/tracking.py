"""MLflow side of a sweep: one parent run per sweep, one child run per grid point.

The child run is created by the worker *before* training and its id stored in the trial's user
attrs, so a re-queued attempt continues the same run instead of starting a second one. Tags come
from :mod:`mhmoe.tracking.names`, so the MLflow UI and ``analysis/`` group runs by sweep.
"""

from __future__ import annotations

import time
from typing import Any

from mhmoe.tracking import names
from mhmoe.tracking.client import mlflow_client
from mhmoe.tracking.provenance import command_line, git_commit
from mhmoe.tracking.standard import EXPERIMENT_DESCRIPTION, source_tags


def client(tracking_uri: str):
    return mlflow_client(tracking_uri)


def experiment_id(mlflow_client, name: str) -> str:
    """Get or create the experiment (tolerates a concurrent creator).

    Artifacts of a SQLite store go beside it, as the trainer's do (MLflow's default is ./mlruns in
    whatever folder the worker runs from).
    """
    from mhmoe.store.home import artifact_root_for

    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return mlflow_client.create_experiment(name, artifact_location=artifact_root_for(mlflow_client.tracking_uri),
                                               tags={names.TAG_DESCRIPTION: EXPERIMENT_DESCRIPTION})
    except Exception:
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def create_parent_run(tracking_uri: str, experiment: str, sweep: str, params: dict[str, Any],
                      description: str = "") -> str:
    mlflow_client = client(tracking_uri)
    tags = {names.TAG_ROLE: names.ROLE_SWEEP, names.TAG_SWEEP: sweep, names.TAG_COMMAND: command_line(),
            **source_tags(git_commit())}
    if description:
        tags[names.TAG_DESCRIPTION] = description
    run = mlflow_client.create_run(experiment_id(mlflow_client, experiment), run_name=sweep, tags=tags)
    for key, value in params.items():
        mlflow_client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def trial_tags(sweep: str, trial_number: int, attrs: dict[str, Any]) -> dict[str, str]:
    # Tuning trials are their own role: the report's comparisons load ``trial`` runs only.
    role = names.ROLE_TUNE if attrs.get("kind") == names.ROLE_TUNE else names.ROLE_TRIAL
    return {
        names.TAG_ROLE: role,
        names.TAG_SWEEP: sweep,
        names.TAG_TRIAL: str(trial_number),
        names.TAG_CONFIG_HASH: str(attrs["config_hash"]),
        names.TAG_ATTEMPT: str(attrs.get("attempt", 1)),
        names.TAG_POINT: str(attrs["point"]),
        names.TAG_VARIANT: str(attrs["variant"]),
        names.TAG_SEED: str(attrs["seed"]),
    }


def create_trial_run(tracking_uri: str, experiment: str, parent_run_id: str | None, run_name: str,
                     tags: dict[str, str]) -> str:
    mlflow_client = client(tracking_uri)
    all_tags = dict(tags)
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = mlflow_client.create_run(experiment_id(mlflow_client, experiment), run_name=run_name, tags=all_tags)
    return run.info.run_id


def set_tags(tracking_uri: str, run_id: str, tags: dict[str, str]) -> None:
    mlflow_client = client(tracking_uri)
    for key, value in tags.items():
        mlflow_client.set_tag(run_id, key, value)


def terminate(tracking_uri: str, run_id: str, status: str) -> None:
    client(tracking_uri).set_terminated(run_id, status)


def mark_failed(tracking_uri: str, run_id: str, reason: str) -> None:
    """Close a run FAILED with its one-line reason (``mhmoe.failure_reason``)."""
    mlflow_client = client(tracking_uri)
    mlflow_client.set_tag(run_id, names.TAG_FAILURE, reason)
    mlflow_client.set_terminated(run_id, "FAILED")


def reopen(tracking_uri: str, run_id: str) -> None:
    """Mark a run RUNNING again (a retried trial, or a parent whose sweep got new points).

    The failure reason of the attempt before is dropped: the run is live again (the trial's
    Optuna attrs keep every attempt's reason).
    """
    mlflow_client = client(tracking_uri)
    mlflow_client.update_run(run_id, status="RUNNING")
    if names.TAG_FAILURE in mlflow_client.get_run(run_id).data.tags:
        mlflow_client.delete_tag(run_id, names.TAG_FAILURE)


def delete(tracking_uri: str, run_id: str) -> None:
    """Soft-delete a run (it stays restorable in the MLflow UI, hidden from searches)."""
    client(tracking_uri).delete_run(run_id)


def log_summary(tracking_uri: str, run_id: str, metrics: dict[str, float], tags: dict[str, str], step: int) -> None:
    """The parent run's aggregates, one batched call; ``step`` = trials ended so far (a curve per metric)."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    client(tracking_uri).log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()],
                                   tags=[RunTag(k, v) for k, v in tags.items()])


def log_table(tracking_uri: str, run_id: str, rows: list[dict], artifact_file: str) -> None:
    """A JSON table artifact in ``log_table``'s layout (``columns``, ``data``), replaced on every call
    (``log_table`` itself appends the rows to an existing file)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    client(tracking_uri).log_dict(run_id, {"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]},
                                  artifact_file)


def run_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    return dict(client(tracking_uri).get_run(run_id).data.metrics)


__all__ = ["create_parent_run", "create_trial_run", "delete", "log_summary", "mark_failed", "reopen", "run_metrics",
           "set_tags", "terminate", "trial_tags"]
