"""LR schedules: linear (the paper's, default), cosine and warmup-stable-decay, on the real optimizer."""

from __future__ import annotations

import math

import pytest
import torch

from mhmoe.config.base import ConfigError
from mhmoe.config.run import OptimConfig
from mhmoe.training.optim import build_optimizer


def lrs(steps: int, **optim) -> list[float]:
    """The LR at every step of a real AdamW + LambdaLR built by the trainer's own code."""
    net = torch.nn.Linear(4, 4)
    optimizer, scheduler = build_optimizer(net, OptimConfig(lr=1.0, **optim), steps)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_linear_is_the_default_and_ends_at_the_floor() -> None:
    lr = lrs(100, warmup_steps=10, min_lr_ratio=0.05)
    assert lr[:3] == pytest.approx([0.1, 0.2, 0.3])
    assert max(lr) == pytest.approx(1.0) and lr[10] == pytest.approx(1.0)
    assert lr[55] == pytest.approx(1 - 0.95 * 45 / 90)
    assert lr[-1] == pytest.approx(1 - 0.95 * 89 / 90)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))


def test_cosine_is_half_way_at_the_middle_of_the_decay() -> None:
    lr = lrs(110, warmup_steps=10, min_lr_ratio=0.0, schedule="cosine")
    assert lr[60] == pytest.approx(0.5) and lr[10] == pytest.approx(1.0)
    assert lr[35] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_wsd_holds_the_peak_then_decays_over_the_last_fraction() -> None:
    lr = lrs(100, warmup_steps=10, min_lr_ratio=0.1, schedule="wsd", decay_fraction=0.2)
    assert all(v == pytest.approx(1.0) for v in lr[10:80])
    assert lr[90] == pytest.approx(1 - 0.9 * 10 / 20)
    assert lr[80] > lr[90] > lr[99]
    # Two lengths share the stable phase: a longer run is the same LR up to the shorter's decay.
    longer = lrs(200, warmup_steps=10, min_lr_ratio=0.1, schedule="wsd", decay_fraction=0.1)
    assert longer[:80] == pytest.approx(lr[:80])


@pytest.mark.parametrize("bad", [{"schedule": "step"}, {"decay_fraction": 0.0}, {"decay_fraction": 1.5}])
def test_bad_schedule_settings_name_the_field(bad: dict) -> None:
    with pytest.raises(ConfigError, match=f"optim.{next(iter(bad))}"):
        OptimConfig(**bad)
