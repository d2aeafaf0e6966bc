"""The sweep parent run's aggregates, from real Optuna trials (no training)."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from mhmoe.sweep.queue import PointState
from mhmoe.sweep.summary import parent_summary

METRIC = "val/shakespeare/ppl"


def point(label: str, *states_values: tuple[TrialState, float | None]) -> PointState:
    attempts = tuple(optuna.trial.create_trial(state=state, value=value, user_attrs={"point": label})
                     for state, value in states_values)
    return PointState(config_hash=label, label=label, state="?", attempts=attempts)


def with_state(p: PointState, state: str) -> PointState:
    return PointState(config_hash=p.config_hash, label=p.label, state=state, attempts=p.attempts)


def test_mean_over_seeds_per_variant_best_point_and_counts() -> None:
    done, fail = TrialState.COMPLETE, TrialState.FAIL
    points = [
        with_state(point("smoe/seed=0", (done, 40.0)), "done"),
        with_state(point("smoe/seed=1", (fail, None), (done, 44.0)), "done"),  # retried, then done
        with_state(point("mhmoe-h2/E=32/seed=0", (done, 38.0)), "done"),
        with_state(point("mhmoe-h2/E=32/seed=1", (fail, None)), "failed"),
        with_state(point("dense/seed=0", (TrialState.WAITING, None)), "waiting"),
    ]
    result = parent_summary(points, METRIC)
    m = result.metrics
    assert result.variants == [{"variant": "smoe", "seeds": 2, "mean": pytest.approx(42.0)},
                               {"variant": "mhmoe-h2/E=32", "seeds": 1, "mean": pytest.approx(38.0)}]  # no dense yet
    assert "| mhmoe-h2/E=32 | 1 | 38 |" in result.markdown(METRIC)
    assert not any(k.startswith(("mean/", "seeds/")) for k in m)  # a table, not one chart per variant
    assert m[f"best/{METRIC}"] == 38.0 and result.tags["mhmoe.best_point"] == "mhmoe-h2/E=32/seed=0"
    assert (m["points/done"], m["points/failed"], m["points/waiting"], m["points/running"]) == (3, 1, 1, 0)
    maximised = parent_summary(points, METRIC, "maximize")
    assert maximised.metrics[f"best/{METRIC}"] == 44.0 and maximised.tags["mhmoe.best_point"] == "smoe/seed=1"


def test_no_finished_point_gives_counts_only() -> None:
    result = parent_summary([with_state(point("smoe/seed=0", (TrialState.RUNNING, None)), "running")], METRIC)
    assert result.metrics == {"points/done": 0.0, "points/running": 1.0, "points/waiting": 0.0, "points/failed": 0.0}
    assert result.tags == {}
