"""lm-eval results -> MLflow: ``eval/<task>/<metric>`` metrics and the full ``eval/results.json``.

lm-eval names a result ``<metric>,<filter>`` (``acc,none``, ``acc_stderr,none``,
``exact_match,strict-match``); MLflow metric names cannot hold commas, so the default filter
``none`` is dropped (``eval/mhmoe_mc/acc``) and any other becomes a path segment
(``eval/gsm8k/exact_match/strict-match``). Non-numeric entries (``alias``, ``"N/A"`` stderrs) and
non-finite values stay only in the JSON artifact.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

from mhmoe.evaluation.hub import first_line
from mhmoe.evaluation.task_manager import EvalError
from mhmoe.tracking.client import mlflow_client
from mhmoe.tracking.names import eval_metric

RESULTS_ARTIFACT = "eval/results.json"
DEFAULT_FILTER = "none"
# MLflow allows alphanumerics, underscores, dashes, periods, spaces and slashes in metric names.
UNSAFE = re.compile(r"[^\w\-./ ]")
MLFLOW_BATCH = 1000
"""Most metrics MLflow accepts in one log_batch call."""


def metric_name(task: str, key: str) -> str | None:
    """``eval/<task>/<metric>[/<filter>]`` for an lm-eval ``<metric>,<filter>`` key, None for other keys."""
    if "," not in key:
        return None
    metric, _, filter_name = key.partition(",")
    name = metric if filter_name == DEFAULT_FILTER else f"{metric}/{filter_name}"
    return eval_metric(UNSAFE.sub("_", task), UNSAFE.sub("_", name))


def flatten_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Every finite numeric task and group result under its MLflow name."""
    out: dict[str, float] = {}
    for section in ("results", "groups"):
        for task, values in (results.get(section) or {}).items():
            for key, value in values.items():
                name = metric_name(task, key)
                if name is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                if math.isfinite(value):
                    out[name] = float(value)
    return out


def results_json(results: dict[str, Any]) -> str:
    from lm_eval.utils import handle_non_serializable

    return json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)


def check_run(run_id: str, tracking_uri: str) -> None:
    """Fail before evaluating if the run to log to cannot be found."""
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow_client(tracking_uri).get_run(run_id)
    except MlflowException as err:
        raise EvalError(f"MLflow run {run_id} not found in {tracking_uri}: {first_line(err)}") from None
    if run.info.lifecycle_stage == "deleted":
        raise EvalError(f"MLflow run {run_id} in {tracking_uri} is deleted; restore it or pass --no-log")


def log_results(results: dict[str, Any], run_id: str, tracking_uri: str, step: int = 0) -> dict[str, float]:
    """Log the flattened metrics at ``step`` (the checkpoint's global step) and the JSON; return the metrics."""
    from mlflow.entities import Metric

    client = mlflow_client(tracking_uri)
    metrics = flatten_metrics(results)
    stamp = int(time.time() * 1000)
    entries = [Metric(key=k, value=v, timestamp=stamp, step=step) for k, v in sorted(metrics.items())]
    for start in range(0, len(entries), MLFLOW_BATCH):
        client.log_batch(run_id, metrics=entries[start : start + MLFLOW_BATCH])
    client.log_text(run_id, results_json(results), RESULTS_ARTIFACT)
    return metrics
