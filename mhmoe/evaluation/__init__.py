"""Downstream evaluation: mhmoe checkpoints as an lm-evaluation-harness model (``mhmoe``).

- :mod:`~mhmoe.evaluation.lm_adapter`: the ``@register_model("mhmoe")`` LM class;
- :mod:`~mhmoe.evaluation.runner`: :func:`evaluate_checkpoint` (simple_evaluate + MLflow logging);
- :mod:`~mhmoe.evaluation.task_manager`: ``--tasks`` specs -> loaded tasks, offline-aware;
- :mod:`~mhmoe.evaluation.local_tasks` / :mod:`~mhmoe.evaluation.heldout`: the shipped offline tasks
  (``mhmoe_mc``, ``mhmoe_gen``, ``mhmoe_heldout_ppl``; templates and data in ``tasks/``);
- :mod:`~mhmoe.evaluation.results`: ``eval/<task>/<metric>`` names and MLflow logging.

Names are resolved lazily: importing this package costs nothing, and lm-eval (~2 s) loads only
when the adapter or the runner is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MHMoELM": "mhmoe.evaluation.lm_adapter",
    "evaluate_checkpoint": "mhmoe.evaluation.runner",
    "EvalError": "mhmoe.evaluation.task_manager",
    "local_task_names": "mhmoe.evaluation.local_tasks",
    "flatten_metrics": "mhmoe.evaluation.results",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mhmoe.evaluation' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
