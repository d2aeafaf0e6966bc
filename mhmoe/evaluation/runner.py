"""``evaluate_checkpoint``: lm-eval on a checkpoint, logged back to the MLflow run that trained it.

Used by ``mhmoe eval`` and by sweeps whose spec lists downstream tasks. Metrics land in the
training run as ``eval/<task>/<metric>`` at the checkpoint's global step (so several checkpoints
of one run form a curve), and the full results as the artifact ``eval/results.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mhmoe.evaluation.hub import configure_hub
from mhmoe.evaluation.task_manager import EvalError


def split_tasks(tasks: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]``."""
    items = [tasks] if isinstance(tasks, str) else list(tasks)
    return [t.strip() for item in items for t in item.split(",") if t.strip()]


def resolve_run(checkpoint_path: Path, run_id: str | None, tracking_uri: str | None) -> tuple[str, str]:
    """(run id, tracking URI) to log to: the arguments, else the checkpoint's run in the current store.

    The store is ``tracking_uri``, else the current home's (or ``MLFLOW_TRACKING_URI``), never the
    one recorded at training time: a copied or moved home logs into itself.
    """
    from mhmoe.evaluation.results import check_run
    from mhmoe.store.home import default_tracking_uri
    from mhmoe.training.checkpoint import run_of

    recorded_run, recorded_uri = run_of(checkpoint_path)
    run_id = run_id or recorded_run
    if not run_id:
        raise EvalError(f"{checkpoint_path} records no MLflow run; pass run_id (--run-id) or log=False (--no-log)")
    tracking_uri = tracking_uri or default_tracking_uri()
    try:
        check_run(run_id, tracking_uri)
    except EvalError as err:
        if recorded_uri and recorded_uri != tracking_uri:
            raise EvalError(f"{err}; the checkpoint was trained against {recorded_uri} "
                            "(pass --tracking-uri to log there)") from None
        raise
    return run_id, tracking_uri


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    tasks: str | Sequence[str],
    limit: int | float | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    run_id: str | None = None,
    tracking_uri: str | None = None,
    log: bool = True,
    *,
    online: bool = False,
    include_paths: Sequence[str | Path] = (),
    allow_code: bool = False,
) -> dict[str, Any]:
    """Run lm-eval ``tasks`` on the checkpoint and return lm-eval's results dict.

    ``tasks`` holds task/group/tag names, task YAML files or task directories (comma lists work).
    With ``log``, metrics go to ``run_id`` (default: the run recorded in the checkpoint) in
    ``tracking_uri`` (default: the checkpoint's, then the mhmoe default). The hub is offline
    unless ``online`` (see :mod:`mhmoe.evaluation.hub`). User task YAMLs that use ``!function``
    run only with ``allow_code``.
    Raises CheckpointError for a file that is not a safe mhmoe checkpoint, EvalError otherwise.
    """
    configure_hub(online)  # before lm_eval imports the hub libraries
    from lm_eval import simple_evaluate

    from mhmoe.evaluation.lm_adapter import MHMoELM
    from mhmoe.evaluation.results import log_results
    from mhmoe.evaluation.task_manager import select_tasks

    path = Path(checkpoint_path).expanduser()
    names = split_tasks(tasks)
    # Every cheap check first: a bad checkpoint or run fails before any dataset is loaded.
    lm = MHMoELM(pretrained=str(path), device=device, batch_size=batch_size)
    target = resolve_run(path, run_id, tracking_uri) if log else None
    manager, loaded = select_tasks(names, include_paths, allow_code=allow_code)
    results = simple_evaluate(model=lm, tasks=loaded, task_manager=manager, limit=limit, log_samples=False,
                              batch_size=batch_size, device=device)
    assert results is not None  # single process: always rank 0
    results["config"].update(model="mhmoe", model_args={"pretrained": str(path.resolve())}, tasks=names)
    if target is not None:
        results["config"].update(mlflow_run_id=target[0], tracking_uri=target[1])
        log_results(results, *target, step=lm.checkpoint.global_step)
    return results
