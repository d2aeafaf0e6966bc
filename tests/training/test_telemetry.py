"""Routing statistics are named once, by the ``logged`` fields of ``RoutingStats``."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import fields

import torch

from mhmoe.model.routing import LOGGED_STATS, RoutingStats, load_balancing_loss, routing_stats
from mhmoe.tracking import names
from mhmoe.training.telemetry import routing_metrics

LOGGED = ("load_imbalance", "entropy", "activation_ratio", "dropped_frac", "divergence")
"""What runs have logged since the first release: old runs must still load under these names."""


def layer_stats(seed: int) -> RoutingStats:
    """Real statistics of a random 2-head routing decision: 16 tokens, 4 experts, top-2."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(32, 4, generator=g)
    probs = logits.softmax(-1)
    experts = probs.topk(2, dim=-1).indices
    return routing_stats(logits, probs, torch.logsumexp(logits, -1), experts, None, 2, 0.5,
                         load_balancing_loss(probs, experts), torch.zeros(()))


def test_each_logged_field_is_a_metric_per_layer_and_mean_with_its_range() -> None:
    assert tuple(LOGGED_STATS) == LOGGED
    assert [f.name for f in fields(RoutingStats) if f.name in LOGGED_STATS] == list(LOGGED)
    per_layer = {1: layer_stats(0), 3: layer_stats(1)}
    metrics = routing_metrics(per_layer)
    assert set(metrics) == {names.routing_metric(b, s) for b in (1, 3, "mean") for s in LOGGED}
    for stat, (low, high) in LOGGED_STATS.items():
        values = [float(getattr(per_layer[b], stat)) for b in (1, 3)]
        assert metrics[f"routing/layer_1/{stat}"] == values[0]
        assert math.isclose(metrics[f"routing/mean/{stat}"], sum(values) / 2, rel_tol=1e-6)
        assert low <= metrics[f"routing/mean/{stat}"] <= high
        assert names.metric_range(f"routing/mean/{stat}") == (low, high)
        assert names.metric_range(f"routing/layer_7/{stat}") == (low, high)
    assert names.metric_range("routing/mean/activation_ratio") == (0.0, 1.0)
    assert names.metric_range("val/x/ppl") == (1.0, math.inf)
    assert names.metric_range("perf/mfu") == (-math.inf, math.inf)


def test_reading_metric_names_loads_no_torch() -> None:
    """The report and the CLI read names without torch; only a routing range imports the model."""
    code = ("import sys; from mhmoe.tracking import names; names.metric_range('val/x/ppl'); "
            "assert 'torch' not in sys.modules; names.metric_range('routing/mean/entropy'); "
            "assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
