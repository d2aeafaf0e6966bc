"""The one way mhmoe gets an MLflow client.

The store is chosen by :func:`mhmoe.store.home.resolve_tracking_uri` (None = ``$MLFLOW_TRACKING_URI``,
else SQLite in the mhmoe home). A client is built once per store and process: building one costs
about 0.5 s (an SQLite store checks its schema), and a forked worker must not reuse its parent's
connections. MLflow is imported here, on first use (about 1 s): ``mhmoe --help`` stays fast.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from mhmoe.store.home import resolve_tracking_uri


def mlflow_client(tracking_uri: str | None = None) -> Any:  # -> mlflow.MlflowClient (imported lazily)
    """An ``MlflowClient`` for ``tracking_uri`` (None = the default store)."""
    return _client(resolve_tracking_uri(tracking_uri), os.getpid())


@functools.lru_cache(maxsize=16)
def _client(tracking_uri: str, pid: int) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per .npy otherwise
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


__all__ = ["mlflow_client"]
