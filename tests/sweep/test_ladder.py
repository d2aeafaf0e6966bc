"""A token-budget ladder: the training length as a grid axis, each rung its own run and LR schedule."""

from __future__ import annotations

import math
import re

import pytest

from mhmoe.sweep import expand
from mhmoe.sweep.spec import SpecError, parse_spec


def ladder(**extra) -> dict:
    return {"name": "ladder", "base": {"preset": "debug"},
            "groups": {"smoe": {"model.ffn": "smoe"}, "mhmoe-h2": {"model.ffn": "mhmoe", "moe.heads": 2}},
            "grid": {"budget.tokens": ["3e4", 100000], "seed": [0, 1]}, **extra}


def test_each_rung_trains_its_own_number_of_steps() -> None:
    points = expand(parse_spec(ladder()))
    assert len(points) == 8 and len({p.config_hash for p in points}) == 8
    tokens_per_step = points[0].config.train.batch_size * points[0].config.train.seq_len
    steps = {p.label: p.config.train.max_steps for p in points}
    assert steps["smoe/tokens=30000/seed=0"] == math.ceil(30000 / tokens_per_step)
    assert steps["mhmoe-h2/tokens=100000/seed=1"] == math.ceil(100000 / tokens_per_step)
    # Matching is per rung against the SMoE of the same rung: the budget does not change the sizes.
    sizes = {(p.config.moe.num_experts, p.config.moe.expert_d_ff) for p in points if p.group == "mhmoe-h2"}
    assert len(sizes) == 1


@pytest.mark.parametrize("spec, message", [
    (ladder(budget={"steps": 10}), "set the training length; keep one"),
    (ladder(grid={"budget.tokens": [1e5], "budget.steps": [10]}), "set the training length; keep one"),
    (ladder(grid={"budget.tokens": ["many"]}),
     re.escape("budget.tokens='many' must be a whole number from 1 to 1e+13")),
    (ladder(grid={"budget.tokens": [0.5]}), re.escape("budget.tokens=0.5 must be a whole number from 1 to 1e+13")),
    (ladder(groups={"smoe": {"model.ffn": "smoe", "budget.tokens": 1000}}), "unknown key 'budget.tokens'"),
])
def test_bad_ladders_are_refused(spec: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        expand(parse_spec(spec))
