"""``--set KEY=VALUE`` and ``--name`` on sweep commands: validated like the spec, a new study when the points change."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mhmoe.cli import main
from mhmoe.sweep.overrides import apply_sets, load_spec_with, override_name
from mhmoe.sweep.plan import plan
from mhmoe.sweep.queue import SweepQueue
from mhmoe.sweep.spec import SpecError
from tests.sweep.conftest import debug_spec


def test_keys_reach_the_spec_section_or_the_base_config() -> None:
    data = {"name": "s", "base": {"preset": "debug"}, "budget": {"steps": 20}, "grid": {"seed": [0]}}
    out = apply_sets(data, ["budget.steps=200", "optim.lr=0.001", "grid.moe.heads=[2, 3]", "retries=4",
                            "groups.mh.moe.heads=3", "seeds.max=10"])
    assert out["budget"] == {"steps": 200} and out["retries"] == 4 and out["seeds"] == {"max": 10}
    assert out["base"]["overrides"] == {"optim.lr": 0.001}
    assert out["grid"] == {"seed": [0], "moe.heads": [2, 3]}
    assert out["groups"] == {"mh": {"moe.heads": 3}}
    assert data["budget"] == {"steps": 20} and "overrides" not in data["base"]  # the file's data is untouched
    assert override_name("s", ["b=1", "a=2"]) == override_name("s", ["a=2", "b=1"]) != override_name("s", ["a=3"])


def test_overrides_that_change_the_points_name_a_new_study(tmp_path: Path) -> None:
    path = debug_spec(tmp_path / "o.yaml", name="over")
    said: list[str] = []
    same = load_spec_with(path, ["retries=5"], say=said.append)  # the points stay: the same study, extended
    assert same.name == "over" and same.retries == 5 and not said
    longer = load_spec_with(path, ["budget.steps=30", "optim.lr=0.002"], say=said.append)
    assert longer.name == override_name("over", ["budget.steps=30", "optim.lr=0.002"])
    assert said and longer.name in said[0]
    assert {p.config.train.max_steps for p in plan(longer).points} == {30}
    assert {p.config.optim.lr for p in plan(longer).points} == {0.002}
    assert load_spec_with(path, ["budget.steps=30"], "mine").name == "mine"
    with pytest.raises(SpecError, match="budget.steps"):
        load_spec_with(path, ["budget.steps=-1"])  # checked by the spec's own parser
    with pytest.raises(SpecError, match="--set: override 'budget' must look like key=value"):
        load_spec_with(path, ["budget"])


def test_sweep_commands_take_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = debug_spec(tmp_path / "o.yaml", name="over")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert main(["sweep", "plan", str(path), "--set", "budget.steps=12"]) == 0
    out = capsys.readouterr().out
    name = override_name("over", ["budget.steps=12"])
    assert f"sweep {name}: 2 trials" in out and "--set changes the points" in out
    assert main(["sweep", "submit", str(path), "--set", "budget.steps=12", "--storage", storage,
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 0
    trials = SweepQueue(storage, name).trials()
    assert len(trials) == 2 and {t.user_attrs["config"]["train"]["max_steps"] for t in trials} == {12}
    assert not SweepQueue.exists(storage, "over")  # the unchanged spec's study is not touched
    assert main(["sweep", "status", str(path), "--set", "budget.steps=12", "--storage", storage]) == 0
    assert f"sweep {name}: 2 points" in capsys.readouterr().out
    assert main(["sweep", "plan", str(path), "--set", "grid.moe.heads=[0]"]) == 2
    assert "moe.heads" in capsys.readouterr().err
    assert yaml.safe_load(path.read_text())["budget"] == {"steps": 20}  # the file itself is never rewritten


def test_every_sweep_subcommand_describes_itself_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("plan", "submit", "work", "run", "extend", "status"):
        assert main(["sweep", action, "--help"]) == 0
        out = capsys.readouterr().out
        assert f"mhmoe sweep {action}: " in out, (action, out[:300])
