"""Shipped task templates, scene documents and MLflow metric names (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from mhmoe.evaluation.heldout import split_scenes
from mhmoe.evaluation.local_tasks import TEMPLATE_DIR, local_task_names, render_local_tasks
from mhmoe.evaluation.results import flatten_metrics, metric_name
from mhmoe.evaluation.task_manager import EvalError, parse_specs
from mhmoe.store.home import mhmoe_home


def test_templates_render_to_absolute_existing_data_files() -> None:
    out = render_local_tasks()
    assert sorted(p.stem for p in out.glob("*.yaml")) == local_task_names()
    for path in out.glob("*.yaml"):
        text = path.read_text()
        assert "@" not in text.replace("(the @...@ placeholders)", ""), f"unrendered placeholder in {path}"
        assert yaml.safe_load(text)["dataset_kwargs"]["cache_dir"].startswith(str(mhmoe_home()))
    for name in ("mhmoe_mc", "mhmoe_gen"):
        config = yaml.safe_load((out / f"{name}.yaml").read_text())
        data_file = config["dataset_kwargs"]["data_files"]["test"]
        assert config["task"] == name and data_file.startswith("/")
        records = [json.loads(line) for line in Path(data_file).read_text().splitlines()]
        assert 20 <= len(records) <= 40
    mc = [json.loads(line) for line in (TEMPLATE_DIR / "mhmoe_mc.jsonl").read_text().splitlines()]
    assert all(0 <= r["label"] < len(r["choices"]) for r in mc)


def test_scenes_split_at_headings_and_keep_every_character() -> None:
    play = "TITLE\n\nPERSONS\n\nSCENE I. A heath.\nThunder.\n\nSCENE II. A camp.\nAlarum.\nScene 3\nEnd.\n"
    scenes = split_scenes(play)
    assert "".join(scenes) == play
    assert scenes[0].startswith("TITLE") and "SCENE I." in scenes[0]
    assert [s.split("\n")[0] for s in scenes[1:]] == ["SCENE II. A camp.", "Scene 3"]
    assert split_scenes("no headings at all") == ["no headings at all"]


def test_metric_names_are_mlflow_safe() -> None:
    assert metric_name("mhmoe_mc", "acc,none") == "eval/mhmoe_mc/acc"
    assert metric_name("gsm8k", "exact_match,strict-match") == "eval/gsm8k/exact_match/strict-match"
    assert metric_name("mhmoe_mc", "alias") is None
    results = {"results": {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": "N/A", "x,none": float("nan")}},
               "groups": {"g": {"acc,none": 0.25}}}
    assert flatten_metrics(results) == {"eval/t/acc": 0.5, "eval/g/acc": 0.25}


def test_task_specs_sort_names_files_and_directories(tmp_path) -> None:
    (tmp_path / "x.yaml").write_text("task: x\n")
    specs = parse_specs(["mhmoe_mc", str(tmp_path), str(tmp_path / "x.yaml"), " "])
    assert (specs.names, specs.dirs, specs.files) == (["mhmoe_mc"], [tmp_path.resolve()],
                                                       [str((tmp_path / "x.yaml").resolve())])
    try:
        parse_specs([str(tmp_path / "missing.yaml")])
    except EvalError as err:
        assert "does not exist" in str(err)
    else:
        raise AssertionError("a missing task file must be refused")
