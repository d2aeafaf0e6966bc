"""Sweep specs: shipped specs resolve, matching re-derives experts, invalid specs fail cleanly."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from mhmoe.commands.sweep import main as sweep_main
from mhmoe.sweep import SpecError, expand, load_spec, plan
from tests.sweep.conftest import debug_spec

SHIPPED = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_spec_resolves(name: str) -> None:
    spec = load_spec(name)
    points = expand(spec)
    assert spec.name == name
    assert len({p.config_hash for p in points}) == len(points)
    assert all(p.metric.startswith("val/") and p.metric.endswith("/ppl") for p in points)


def test_shipped_spec_sizes() -> None:
    assert {name: len(expand(load_spec(name))) for name in SHIPPED} == {
        "ablation_head_merge": 30, "heads_experts_bits": 16, "paper_v2": 5, "paper_v2_cpu": 15, "smoke": 8,
        "paper_v2_cpu_ladder": 27, "paper_v2_cpu_verdict": 9,
    }


def test_paper_v2_rows_are_the_papers_matched_configs() -> None:
    rows = {p.group: p.config for p in expand(load_spec("paper_v2"))}
    shape = {g: (c.model.ffn, c.moe.num_experts, c.moe.top_k, c.moe.expert_d_ff)
             for g, c in rows.items() if g != "dense"}
    assert shape == {"smoe": ("smoe", 8, 1, 2048), "fine_grained": ("fine_grained", 16, 2, 1024),
                     "mhmoe-h2": ("mhmoe", 40, 2, 768), "mhmoe-h3": ("mhmoe", 96, 3, 512)}
    assert rows["dense"].model.ffn == "dense" and rows["dense"].model.d_ff == 2048
    assert all(c.train.max_steps == 100_000 for c in rows.values())


def test_changing_heads_rederives_expert_count_and_size(tmp_path: Path) -> None:
    spec = load_spec(debug_spec(tmp_path / "h.yaml", groups={"mh": {"model.ffn": "mhmoe"}},
                                grid={"moe.heads": [1, 2, 3]}))
    by_heads = {p.config.moe.heads: (p.config.moe.num_experts, p.config.moe.expert_d_ff, p.config.moe.top_k)
                for p in expand(spec)}
    # debug: d=48, SMoE 8 x 128 top-1. h=2 -> 40 x 48 top-2, h=3 -> 96 x 32 top-3 (docs/MATCHING.md rule at d=48).
    assert by_heads[2] == (40, 48, 2) and by_heads[3] == (96, 32, 3)
    assert all(abs(p.flops_mismatch_pct) < 1 for p in expand(spec))


def test_match_none_uses_values_as_given(tmp_path: Path) -> None:
    spec = load_spec(debug_spec(tmp_path / "n.yaml", match={"policy": "none"},
                                groups={"mh": {"model.ffn": "mhmoe", "moe.num_experts": 12, "moe.expert_d_ff": 20}},
                                grid={"moe.heads": [2, 4]}))
    assert {(p.config.moe.heads, p.config.moe.num_experts, p.config.moe.expert_d_ff) for p in expand(spec)} == \
        {(2, 12, 20), (4, 12, 20)}


def test_table4_modes_differ_only_for_mhmoe() -> None:
    points = {p.group: p.config for p in expand(load_spec("ablation_head_merge")) if p.config.seed == 0}
    # rematch: h=2 experts fill the projection-free budget (F_s / 2 = 256); remove: Table 1's 192.
    assert points["t4-mhmoe-h2"].moe.expert_d_ff == 256 and points["t5-none"].moe.expert_d_ff == 192
    assert (points["t5-head"].moe.head_proj, points["t5-head"].moe.merge_proj) == (True, False)
    table1 = next(p.config for p in expand(load_spec("paper_v2_cpu")) if p.group == "mhmoe-h2")
    assert (points["t5-both"].model, points["t5-both"].moe) == (table1.model, table1.moe)


def test_group_pin_wins_over_axis_and_duplicates_run_once(tmp_path: Path) -> None:
    spec = load_spec(debug_spec(tmp_path / "p.yaml", groups={"dense": {"model.ffn": "dense"},
                                                             "mh": {"model.ffn": "mhmoe"}},
                                grid={"moe.heads": [2, 4], "seed": [0, 1]}))
    result = plan(spec)
    labels = [p.label for p in result.points]
    assert labels.count("dense/seed=0") == 1 and len(result.points) == 2 + 4  # dense ignores moe.* axes
    assert "mh/heads=4/seed=1" in labels


def test_token_budget_sets_steps(tmp_path: Path) -> None:
    path = debug_spec(tmp_path / "t.yaml")
    data = yaml.safe_load(path.read_text())
    data["budget"] = {"tokens": 8 * 64 * 25 + 1}  # debug batch 8 x seq 64 -> 26 steps
    path.write_text(yaml.safe_dump(data))
    assert {p.config.train.max_steps for p in expand(load_spec(path))} == {26}


def test_plan_prints_one_row_per_trial(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert sweep_main(["plan", "smoke"]) == 0
    out = capsys.readouterr().out
    for column in ("variant", "heads", "experts", "d_ff", "top_k", "bits", "seed", "total", "active",
                   "mults/tok", "dflops%", "dparams%"):
        assert column in out
    assert sum(line.split()[0].isdigit() for line in out.splitlines()[1:] if line.strip()) == 8



def test_plan_says_what_the_verdict_sections_add(capsys: pytest.CaptureFixture) -> None:
    assert sweep_main(["plan", "paper_v2_cpu_verdict"]) == 0
    out = capsys.readouterr().out
    assert "comparisons (baseline -> variant, paired on seeds): smoe -> mhmoe-h3, dense -> smoe" in out
    assert "up to 8 (sequential rule" in out and "equivalence margin +-0.01" in out
    assert "15 tuning trials first" in out
    # 9 now; each compared replicate (3) may get 5 more seeds; 15 tuning trials
    assert "trials: 9 listed above now, at most 39 in all" in out


def test_the_seed_schedule_starts_as_a_seed_axis(tmp_path: Path) -> None:
    spec = load_spec(debug_spec(tmp_path / "s.yaml", grid={}, seeds={"start": 3, "max": 5}))
    assert [(a.key, a.values) for a in spec.grid] == [("seed", (0, 1, 2))]
    assert sorted(p.config.seed for p in expand(spec)) == [0, 0, 1, 1, 2, 2]


INVALID = {
    "unknown_spec_key": ({"gird": {"seed": [0]}}, "unknown spec key 'gird'"),
    "unknown_config_key": ({"groups": {"x": {"moe.head": 2}}}, "unknown key 'moe.head'; did you mean 'moe.heads'"),
    "heads_not_dividing": ({"groups": {"x": {"model.ffn": "mhmoe", "moe.heads": 5}}},
                           "moe.heads=5 does not divide model.d_model=48"),
    "top_k_above_experts": ({"match": "none", "groups": {"x": {"moe.top_k": 9}}},
                            "moe.top_k=9 must be <= moe.num_experts=8"),
    "axis_wrong_type": ({"grid": {"moe.heads": [2, "two"]}}, "moe.heads='two' must be an integer"),
    "empty_axis": ({"grid": {"seed": []}}, "grid axis 'seed' has no values"),
    "bad_match_mode": ({"groups": {"x": {"model.ffn": "mhmoe", "match.mode": "fit"}}},
                       "match.mode='fit' is not allowed; choose one of ['match', 'remove', 'rematch']"),
    "bad_preset": ({"base": {"preset": "huge"}}, "base.preset='huge' is not allowed; choose one of"),
    "metric_set_not_validated": ({"validation": {"sets": ["shakespeare"], "metric": "val/wiki/ppl"}},
                                 "choose one of ['val/shakespeare/loss', 'val/shakespeare/ppl']"),
    "derived_key_under_flops": ({"groups": {"x": {"model.ffn": "mhmoe", "moe.num_experts": 4}}},
                                "moe.num_experts is derived by match.policy=flops"),
    "compare_unknown_group": ({"compare": [["smoe", "fine"]]}, "compare[0]: 'fine' is not a group; groups: "),
    "seeds_max_below_start": ({"grid": {}, "seeds": {"start": 4, "max": 3}},
                              "seeds.max=3 must be an integer from seeds.start=4 to 50"),
    "seeds_and_seed_axis": ({"seeds": {"start": 2, "max": 4}}, "seeds and the grid axis 'seed' both set the seeds"),
    "tune_key_not_a_config_key": ({"tune": {"keys": {"optim.learning_rate": [1e-4, 1e-2, "log"]}}},
                                  "tune.keys.optim.learning_rate: unknown config key"),
    "tune_range_low_not_below_high": ({"tune": {"keys": {"optim.lr": [1e-2, 1e-4]}}},
                                      "tune.keys.optim.lr: low 0.01 must be < high 0.0001"),
    "tune_on_a_reported_set": ({"tune": {"keys": {"optim.lr": [1e-4, 1e-2]}, "set": "shakespeare"}},
                               "tune.set='shakespeare' is a reported validation set ['shakespeare']"),
    "tune_seed_is_a_comparison_seed": ({"tune": {"keys": {"optim.lr": [1e-4, 1e-2]}, "seeds": [0]}},
                                       "tune.seeds [0] are also comparison seeds"),
    "tune_a_model_key": ({"tune": {"keys": {"moe.heads": [1, 4]}}}, "moe.heads defines what is compared"),
    "bad_margin": ({"margin": -0.1}, "margin=-0.1 must be a number > 0"),
    "name_too_long": ({"name": "s" * 500}, "must be 1 to 100 letters, digits"),
    "grid_past_the_cap": ({"grid": {"seed": list(range(101)), "optim.lr": [1e-3 * (i + 1) for i in range(100)]}},
                          "the grid has 20,200 points (groups x axis values), over the cap of 5,000; "
                          "shorten an axis, or set MHMOE_SWEEP_MAX_POINTS"),
    "max_steps_axis_under_a_budget": ({"grid": {"train.max_steps": [10, 20]}},
                                      "grid axis 'train.max_steps' and the budget both set train.max_steps"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_spec_fails_before_creating_anything(case: str, tmp_path: Path, stores: dict[str, str],
                                                     capsys: pytest.CaptureFixture) -> None:
    change, message = INVALID[case]
    path = debug_spec(tmp_path / f"{case}.yaml")
    data = yaml.safe_load(path.read_text())
    data.update(change)
    path.write_text(yaml.safe_dump(data))
    for action in ("plan", "submit", "run"):
        stored = ["--storage", stores["storage"], "--tracking-uri", stores["tracking"]] if action != "plan" else []
        code = sweep_main([action, str(path), *stored])
        err = capsys.readouterr().err
        assert code == 2, (action, err)
        assert message in err, err
        assert all(line.startswith("error: ") for line in err.strip().splitlines())
    with pytest.raises(SpecError):
        expand(load_spec(path))
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_planning_reads_the_base_once_and_resolves_each_point_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A grid point's config is built once from its overrides; points at the same coordinates
    share their baseline; the preset and config file are read once per plan."""
    plan_module = importlib.import_module("mhmoe.sweep.plan")  # the package re-exports a function `plan`

    calls = {"base": 0, "build": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(plan_module, "config_base", counted("base", plan_module.config_base))
    monkeypatch.setattr(plan_module, "build_run_config", counted("build", plan_module.build_run_config))
    spec = load_spec("smoke")
    grid_points = len(spec.groups) * len(spec.grid[0].values)
    the_plan = plan(spec)
    assert calls["base"] == 1
    # 8 points + one SMoE baseline per seed (the smoe group's own config is that baseline)
    assert len(the_plan.points) == grid_points == 8 and calls["build"] == grid_points + 2


def test_the_metric_is_resolved_once_for_the_whole_plan(tmp_path: Path) -> None:
    path = debug_spec(tmp_path / "m.yaml")
    data = yaml.safe_load(path.read_text())
    data["validation"] = {"sets": ["shakespeare", "pydoc"]}
    path.write_text(yaml.safe_dump(data))
    the_plan = plan(load_spec(path))
    assert the_plan.metric == "val/shakespeare/ppl"  # names.default_metric: the first set's perplexity
    assert {p.metric for p in the_plan.points} == {the_plan.metric}


def test_plan_takes_the_groups_in_turn(tmp_path: Path) -> None:
    # The queue claims in plan order: a sweep stopped part way must hold whole comparisons.
    spec = load_spec(debug_spec(tmp_path / "o.yaml", groups={"dense": {"model.ffn": "dense"},
                                                             "smoe": {"model.ffn": "smoe"}},
                                grid={"seed": [0, 1, 2]}))
    labels = [p.label for p in plan(spec).points]
    assert labels == ["dense/seed=0", "smoe/seed=0", "dense/seed=1", "smoe/seed=1",
                      "dense/seed=2", "smoe/seed=2"]


def test_the_grid_cap_is_raised_by_its_variable_and_a_bad_value_is_refused(tmp_path: Path, monkeypatch,
                                                                           capsys: pytest.CaptureFixture) -> None:
    path = debug_spec(tmp_path / "big.yaml", grid={"seed": list(range(3000))})  # 2 groups x 3000 seeds
    assert sweep_main(["plan", str(path)]) == 2 and "over the cap of 5,000" in capsys.readouterr().err
    monkeypatch.setenv("MHMOE_SWEEP_MAX_POINTS", "many")
    assert sweep_main(["plan", str(path)]) == 2
    assert "MHMOE_SWEEP_MAX_POINTS='many' must be a whole number >= 1" in capsys.readouterr().err
    monkeypatch.setenv("MHMOE_SWEEP_MAX_POINTS", "6000")
    assert len(load_spec(path).grid[0].values) == 3000  # parsed, not refused
