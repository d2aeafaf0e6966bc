"""The scheduler on a real Optuna study, with a scripted objective instead of training.

A loop plays the worker: claim a point, tell a value computed from its config, schedule, repeat.
That makes the science deterministic (which learning rate is best, how large each difference
is) while the queue, the tuning studies and their samplers are the real ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from analysis.sequential import SeedSchedule, sequential_verdict
from mhmoe.sweep import expand, load_spec
from mhmoe.sweep.queue import SweepQueue
from mhmoe.sweep.scheduler import (
    VERDICT_SETTING,
    chosen_values,
    comparison_points,
    open_tune_study,
    schedule,
    tune_spec,
)
from mhmoe.sweep.submit import submit_sweep
from mhmoe.sweep.verdicts import format_verdict, sweep_verdict
from tests.sweep.conftest import debug_spec

GROUPS = {"dense": {"model.ffn": "dense"}, "smoe": {"model.ffn": "smoe"},
          "mhmoe-h2": {"model.ffn": "mhmoe", "moe.heads": 2}}


def submit(path: Path, stores: dict[str, str]) -> SweepQueue:
    spec = load_spec(path)
    queue, _ = submit_sweep(spec, expand(spec), storage=stores["storage"], tracking_uri=stores["tracking"])
    return queue


def drive(queue: SweepQueue, objective: Callable[[dict], float], *, limit: int = 400) -> int:
    """Claim, tell and schedule like a worker until nothing is left; returns the trials told."""
    told = 0
    while told < limit:
        trial = queue.claim(worker="script")
        if trial is None:
            if schedule(queue):
                continue
            return told
        queue.complete(trial, objective(trial.user_attrs), {})
        told += 1
        schedule(queue)
    raise AssertionError("the scheduler kept adding points")


def group_of(attrs: dict) -> str:
    return str(attrs["group"])


def test_tuning_picks_each_groups_own_best_value_and_the_comparison_trains_at_it(tmp_path, stores):
    # smoe is best at lr 1e-4, mhmoe-h2 at 1e-2 (a scripted bowl in log10 lr).
    best = {"smoe": -4.0, "mhmoe-h2": -2.0}
    tune = {"keys": {"optim.lr": [1e-5, 1e-1, "log"]}, "trials": 8, "budget": 0.5, "seeds": [100, 101],
            "holdout": 0.2, "parallel": 2}
    path = debug_spec(tmp_path / "t.yaml", name="tuned", groups={k: GROUPS[k] for k in best}, grid={"seed": [0, 1]},
                      tune=tune)
    queue = submit(path, stores)
    first = queue.trials()
    assert first and all(t.user_attrs.get("kind") == "tune" for t in first)  # comparison points wait for tuning

    def objective(attrs: dict) -> float:
        lr = attrs["config"]["optim"]["lr"]
        return 50 + 10 * (math.log10(lr) - best[group_of(attrs)]) ** 2 + 0.01 * attrs["seed"]

    drive(queue, objective)
    verdict = queue.settings()[VERDICT_SETTING]
    chosen = chosen_values(queue, verdict)
    assert set(chosen) == {"smoe", "mhmoe-h2"}
    assert chosen["smoe"]["optim.lr"] < 1e-3 < chosen["mhmoe-h2"]["optim.lr"]
    spec = tune_spec(verdict)
    for rep in chosen:
        study = open_tune_study(queue, rep, spec)
        assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 8  # every proposal told once
    for trial in queue.trials():
        attrs, cfg = trial.user_attrs, trial.user_attrs["config"]
        assert trial.state == TrialState.COMPLETE
        if attrs.get("kind") == "tune":
            assert cfg["train"]["max_steps"] == 10 and cfg["data"]["val_sets"] == ["holdout"]
            assert cfg["data"]["holdout_fraction"] == 0.2 and cfg["seed"] in (100, 101)
            assert attrs["metric"] == "val/holdout/ppl"
        else:
            assert cfg["optim"]["lr"] == chosen[attrs["group"]]["optim.lr"] and cfg["seed"] in (0, 1)
            assert cfg["train"]["max_steps"] == 20 and attrs["metric"] == "val/shakespeare/ppl"
    assert len(queue.point_states()) == 2 * 8 * 2 + 2 * 2  # tune: groups x trials x seeds; then groups x seeds
    assert schedule(queue) == []  # nothing left to add, twice over


def test_grid_tuning_runs_each_value_once(tmp_path, stores):
    tune = {"keys": {"optim.lr": [1e-3, 3e-3, 1e-2]}, "sampler": "grid", "trials": 10, "budget": 0.5}
    path = debug_spec(tmp_path / "g.yaml", name="grid", groups={"smoe": GROUPS["smoe"]}, tune=tune)
    queue = submit(path, stores)
    drive(queue, lambda a: 10 + abs(math.log10(a["config"]["optim"]["lr"]) + 2.5))
    lrs = sorted(t.user_attrs["config"]["optim"]["lr"] for t in queue.trials() if t.user_attrs.get("kind") == "tune")
    assert lrs == [1e-3, 3e-3, 1e-2]  # trials capped at the grid's size
    assert chosen_values(queue, queue.settings()[VERDICT_SETTING])["smoe"]["optim.lr"] in (3e-3, 1e-2)


def test_seeds_are_added_only_where_a_comparison_is_undecided_and_stop(tmp_path, stores):
    # mhmoe-h2 is 0.05 nats better than smoe with a paired spread of 0.01 (resolves in a few seeds);
    # dense and smoe differ by nothing (never resolves; stops by futility or at max).
    path = debug_spec(tmp_path / "s.yaml", name="seeds", groups=GROUPS, grid={},
                      compare=[["smoe", "mhmoe-h2"], ["dense", "smoe"]], seeds={"start": 3, "max": 8})
    queue = submit(path, stores)
    assert len(queue.trials()) == 9
    noise = np.random.default_rng(0).normal(0, 1, size=(3, 50))
    shift = {"dense": 0.0, "smoe": 0.0, "mhmoe-h2": -0.05}
    row = {"dense": 0, "smoe": 1, "mhmoe-h2": 2}

    def objective(attrs: dict) -> float:
        g, s = group_of(attrs), int(attrs["seed"])
        shared = 0.05 * noise[1, s]  # seed-to-seed spread common to every variant: pairing removes it
        return 100 * math.exp(shared + shift[g] + 0.01 * noise[row[g], s])

    drive(queue, objective)
    by_rep = comparison_points(queue.point_states())
    seeds = {rep: sorted(points) for rep, points in by_rep.items()}
    assert all(s == list(range(len(s))) for s in seeds.values())  # lowest missing seed first, no gaps
    assert all(len(s) <= 8 for s in seeds.values())
    found = sweep_verdict(queue)
    assert found is not None
    table = found.table.set_index("variant")
    assert table.loc["mhmoe-h2", "verdict"] == "better" and found.winner == "mhmoe-h2"  # wins all it is in
    assert table.loc["smoe", "verdict"] in ("unresolved", "equivalent")
    # every seed past the start was asked for: some pair it is in was still undecided one seed before
    rule = SeedSchedule(start=3, max=8)
    values = {rep: {s: p.attempts[-1].value for s, p in pts.items()} for rep, pts in by_rep.items()}
    for rep, have in seeds.items():
        for n in range(3, len(have)):
            asked = []
            for base, var in (("smoe", "mhmoe-h2"), ("dense", "smoe")):
                if rep in (base, var):
                    d = [math.log(values[var][s]) - math.log(values[base][s]) for s in range(n)]
                    asked.append(sequential_verdict(d, rule).verdict == "continue")
            assert any(asked), (rep, n)
    text = format_verdict(found)
    assert "mhmoe-h2  smoe" in text and "better (-0.04" in text and "sequential" in text


def test_a_crash_between_asking_and_enqueueing_is_picked_up_not_asked_again(tmp_path, stores):
    tune = {"keys": {"optim.lr": [1e-4, 1e-2, "log"]}, "trials": 3, "budget": 0.5, "parallel": 1}
    path = debug_spec(tmp_path / "c.yaml", name="crash", groups={"smoe": GROUPS["smoe"]}, tune=tune)
    queue = submit(path, stores)
    study = open_tune_study(queue, "smoe", tune_spec(queue.settings()[VERDICT_SETTING]))
    assert len(study.trials) == 1 and len(queue.trials()) == 1
    # the worker told trial 0 and died after asking trial 1, before enqueueing its point
    trial = queue.claim(worker="script")
    queue.complete(trial, 70.0, {})
    study.tell(0, 70.0)
    orphan = study.ask({"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    added = schedule(queue)
    assert added == [f"tune/smoe/trial={orphan.number}/seed=100"]
    assert len(study.trials) == 2  # picked up, not asked again (parallel=1)
    assert schedule(queue) == []
    drive(queue, lambda a: 60.0)
    hashes = [t.user_attrs["config_hash"] for t in queue.trials()]
    assert len(hashes) == len(set(hashes)) == 3 + 1  # 3 tuning points, then seed 0


@pytest.mark.parametrize("spec_kwargs", [{}, {"compare": [["smoe", "mhmoe-h2"]]}])
def test_a_sweep_without_a_schedule_reads_its_fixed_seeds_once(tmp_path, stores, spec_kwargs):
    path = debug_spec(tmp_path / "f.yaml", name="fixed", groups={k: GROUPS[k] for k in ("smoe", "mhmoe-h2")},
                      grid={"seed": [0, 1, 2]}, **spec_kwargs)
    queue = submit(path, stores)
    drive(queue, lambda a: 100 + (5 if a["group"] == "smoe" else 0) + 0.1 * a["seed"])
    assert len(queue.trials()) == 6  # nothing added
    found = sweep_verdict(queue)
    assert found is not None and found.winner == "mhmoe-h2" and "fixed seeds read once" in found.note


def test_extend_adds_seeds_to_a_finished_fixed_seed_sweep_and_reuses_its_points(tmp_path, stores, capsys):
    from mhmoe.commands.sweep import main as sweep_main

    groups = {k: GROUPS[k] for k in ("smoe", "mhmoe-h2")}
    fixed = debug_spec(tmp_path / "fixed.yaml", name="ext", groups=groups, grid={"seed": [0, 1, 2]})
    extended = debug_spec(tmp_path / "extended.yaml", name="ext", groups=groups, grid={},
                          seeds={"start": 3, "max": 6})
    assert sweep_main(["extend", str(extended), "--storage", stores["storage"]]) == 2  # nothing to extend yet
    assert "no study 'ext'" in capsys.readouterr().err
    noise = np.random.default_rng(3).normal(0, 1, size=50)

    def objective(attrs: dict) -> float:  # h2 better by 0.03 nats at a paired spread of about 0.03
        h2 = attrs["group"] == "mhmoe-h2"
        return 100 * math.exp((-0.03 if h2 else 0.0) + 0.02 * noise[attrs["seed"] + (0 if h2 else 10)])

    queue = submit(fixed, stores)
    drive(queue, objective)
    first = {t.user_attrs["config_hash"] for t in queue.trials()}
    assert len(first) == 6
    queue = submit(extended, stores)  # what `sweep extend` does before it starts workers
    drive(queue, objective)
    seeds = {rep: sorted(p) for rep, p in comparison_points(queue.point_states()).items()}
    assert seeds["smoe"] == seeds["mhmoe-h2"] and len(seeds["smoe"]) > 3  # undecided at 3: more seeds
    hashes = [t.user_attrs["config_hash"] for t in queue.trials()]
    assert len(hashes) == len(set(hashes)) and first <= set(hashes)  # seeds 0-2 reused, none trained twice
    found = sweep_verdict(queue)
    assert found is not None and found.table.iloc[0]["verdict"] in ("better", "unresolved")
