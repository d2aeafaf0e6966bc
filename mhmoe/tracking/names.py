"""The MLflow naming contract shared by training, sweeps, evaluation and analysis.

Everything that writes to or reads from MLflow goes through these names, so a report can find
every number it shows and the MLflow UI groups runs the same way for every tool.

Runs
    A training run has tag ``mhmoe.role = train`` (or ``trial`` inside a sweep). A sweep has one
    parent run (``mhmoe.role = sweep``) and one child run per trial (MLflow's
    ``mlflow.parentRunId``), all tagged ``mhmoe.sweep = <sweep name>``.
Params
    The flattened resolved config (``model.ffn``, ``moe.heads``, ``quant.weight_bits``, ``seed``
    ...) plus ``budget.*`` numbers from :mod:`mhmoe.sizing.budget`.
Metrics
    ``train/*``, ``val/<set>/{loss,ppl}``, ``val/tokens``, ``perf/*``,
    ``routing/layer_<block>/<stat>`` and ``routing/mean/<stat>``, ``eval/<task>/<metric>``.
Sweep parent run
    ``mean/<variant>/<metric>`` (mean over the seeds done), ``seeds/<variant>``, ``best/<metric>``
    (tag ``mhmoe.best_point`` names it) and ``points/<state>`` (:mod:`mhmoe.sweep.summary`);
    param ``sweep.metric`` is the metric the sweep optimised (what reports read).
Artifacts
    ``config.yaml`` (resolved config), ``routing/load_step<step>.npy`` (MoE layers x experts
    assignment counts over one validation pass, float64), ``routing/divergence_step<step>.npy``
    (MoE layers x heads: count of tokens whose h sub-tokens reached j+1 distinct experts),
    ``routing/load_step<step>.png`` (the load as a heatmap).
"""

from __future__ import annotations

import math

TAG_ROLE = "mhmoe.role"
TAG_SWEEP = "mhmoe.sweep"
TAG_VARIANT = "mhmoe.variant"
TAG_POINT = "mhmoe.point"
TAG_SEED = "mhmoe.seed"
TAG_TRIAL = "mhmoe.trial"
TAG_CONFIG_HASH = "mhmoe.config_hash"
TAG_ATTEMPT = "mhmoe.attempt"
TAG_GIT_COMMIT = "mhmoe.git_commit"
TAG_CHECKPOINT = "mhmoe.checkpoint"
TAG_PRESET = "mhmoe.preset"
TAG_COMMAND = "mhmoe.command"
"""The command line that created the run (for a sweep's parent run: the ``mhmoe sweep run`` or
``mhmoe sweep work`` command of the first worker)."""

TAG_FAILURE = "mhmoe.failure_reason"
"""Why the run (or its last attempt) ended FAILED, one line (:func:`mhmoe.training.failures.failure_reason`)."""
TAG_RESTART = "mhmoe.restart_reason"
"""Why a sweep point trained from step 0 again (its checkpoints were unusable)."""

TAG_BEST_POINT = "mhmoe.best_point"
"""On a sweep's parent run: the point with the best value of the sweep's metric so far."""
TAG_WINNER = "mhmoe.winner"
"""On a sweep's parent run: the variant every comparison it is in resolves in its favour, else ``none yet``."""
TAG_VERDICT_RULES = "mhmoe.verdict_rules"
"""On a sweep's parent run: JSON of the comparison pairs, seed schedule, margin and tuning (read by the report)."""
TAG_DISPLAY_NAME = "mhmoe.display_name"
"""The paper's name for a run's model (``MH-MoE (head=2)``): :func:`mhmoe.tracking.display.display_name`."""
TAG_DESCRIPTION = "mlflow.note.content"
"""MLflow's own run description (shown on the run page)."""

ROLE_TRAIN = "train"
ROLE_TRIAL = "trial"
ROLE_SWEEP = "sweep"
ROLE_TUNE = "tune"
"""A sweep's tuning trial (scored on held-out training documents; not part of the comparison)."""

METRIC_RANGES = {"ppl": (1.0, math.inf), "loss": (0.0, math.inf)}
"""The values a metric can take, by its last name component (``val/x/ppl`` -> ``ppl``); the routing
statistics' ranges are declared on their ``RoutingStats`` fields (:func:`routing_stats`)."""
ROUTING_PREFIX = "routing/"

CONFIG_ARTIFACT = "config.yaml"
CHECKPOINT_ARTIFACT_DIR = "checkpoint"
"""The final checkpoint (``final.ckpt``) as an artifact, when ``train.log_checkpoint`` allows."""
LOAD_ARTIFACT_DIR = "routing"


VAL_STATS = ("loss", "ppl")
"""What validation logs per set (``val/<set>/loss``, ``val/<set>/ppl``): the metrics a sweep can optimise."""
PARAM_SWEEP_METRIC = "sweep.metric"
"""Param of a sweep's parent run: the metric the sweep optimised (resolved at plan time)."""


def val_metric(set_name: str, stat: str = "ppl") -> str:
    return f"val/{set_name}/{stat}"


def default_metric(val_sets: list[str] | tuple[str, ...]) -> str:
    """The metric a sweep reports when its spec names none: ``val/<first validation set>/ppl``.

    The one default: planning resolves it, and a report of runs older than the stored metric falls
    back to it (the first set in ``data.val_sets`` order).
    """
    return val_metric(val_sets[0], "ppl")


def parse_val_metric(metric: str | None) -> tuple[str, str] | None:
    """``val/<set>/<stat>`` -> ``(set, stat)`` for a stat in :data:`VAL_STATS`; None for anything else."""
    parts = (metric or "").split("/")
    if len(parts) == 3 and parts[0] == "val" and parts[1] and parts[2] in VAL_STATS:
        return parts[1], parts[2]
    return None


def routing_stats() -> dict[str, tuple[float, float]]:
    """Name -> value range of each logged routing statistic: the ``logged`` fields of ``RoutingStats``.

    Imported on first use: the model module needs torch, which readers of the other names never load.
    """
    from mhmoe.model.routing import LOGGED_STATS

    return LOGGED_STATS


def metric_range(metric: str) -> tuple[float, float]:
    """``(low, high)`` a metric's values lie in (:data:`METRIC_RANGES`, :func:`routing_stats`); unbounded
    when not listed."""
    stat = metric.rsplit("/", 1)[-1]
    if metric.startswith(ROUTING_PREFIX) and stat in routing_stats():
        return routing_stats()[stat]
    return METRIC_RANGES.get(stat, (-math.inf, math.inf))


def routing_metric(block: int | str, stat: str) -> str:
    """``routing/layer_<block>/<stat>``; ``block`` is the 0-based block index, or ``mean``."""
    scope = "mean" if block == "mean" else f"layer_{block}"
    return f"{ROUTING_PREFIX}{scope}/{stat}"


def load_artifact(step: int) -> str:
    return f"{LOAD_ARTIFACT_DIR}/load_step{step:07d}.npy"


def load_heatmap_artifact(step: int) -> str:
    """PNG of :func:`load_artifact` (each layer's share per expert) for MLflow's artifact viewer."""
    return f"{LOAD_ARTIFACT_DIR}/load_step{step:07d}.png"


def divergence_artifact(step: int) -> str:
    return f"{LOAD_ARTIFACT_DIR}/divergence_step{step:07d}.npy"


def eval_metric(task: str, metric: str) -> str:
    return f"eval/{task}/{metric}"


def summary_best(metric: str) -> str:
    return f"best/{metric}"


def summary_count(state: str) -> str:
    return f"points/{state}"
