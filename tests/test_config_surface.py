"""Config surface: frozen key set, documented fields, lossless round trips, override rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mhmoe.config.base import ConfigError, field_docs
from mhmoe.config.run import RunConfig, parse_overrides, resolve_run_config, run_config_keys

SNAPSHOT = Path(__file__).with_name("config_keys.txt")


def test_config_keys_are_frozen() -> None:
    """A new ablation knob must show up as a deliberate diff of tests/config_keys.txt."""
    assert run_config_keys() == SNAPSHOT.read_text().split()


def _config_classes() -> list[type]:
    classes, todo = [], [RunConfig]
    while todo:
        cls = todo.pop()
        classes.append(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
                todo.append(f.default_factory)
    return classes


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_every_field_has_a_docstring(cls: type) -> None:
    fields = {f.name for f in dataclasses.fields(cls)}
    if cls is RunConfig:
        fields = {"seed"}  # the sections are documented by their own classes
    documented = {name for name, doc in field_docs(cls).items() if doc}
    assert fields <= documented, f"undocumented: {sorted(fields - documented)}"


@pytest.mark.parametrize("preset", ["paper-v2", "cpu-small", "debug"])
def test_presets_resolve_and_round_trip(preset: str) -> None:
    cfg = resolve_run_config(preset)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.config_hash() == RunConfig.from_dict(cfg.to_dict()).config_hash()


def test_overrides_merge_after_file_and_preset(tmp_path: Path) -> None:
    config_file = tmp_path / "c.yaml"
    config_file.write_text("model:\n  ffn: mhmoe\nmoe:\n  heads: 2\n  top_k: 2\nquant.weight_bits: 1.58\n")
    cfg = resolve_run_config("debug", config_file, parse_overrides(["moe.heads=3", "moe.top_k=3"]))
    assert (cfg.model.ffn, cfg.moe.heads, cfg.moe.top_k, cfg.quant.weight_bits) == ("mhmoe", 3, 3, 1.58)
    assert cfg.model.d_model == 48  # from the preset


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"moe.head": 2}, "unknown config key 'moe.head'"),
        ({"moe.heads": "two"}, "moe.heads='two' must be an integer"),
        ({"quant.weight_bits": 3}, "quant.weight_bits=3.0 is not allowed"),
        ({"train.seq_len": 4096}, "train.seq_len=4096 exceeds model.max_seq_len=64"),
        ({"moe.top_k": 9}, "moe.top_k=9 must be <= moe.num_experts=8"),
    ],
)
def test_bad_overrides_name_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        resolve_run_config("debug", None, overrides)


def test_unknown_file_section_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle:\n  ffn: dense\n")
    with pytest.raises(ConfigError, match="unknown config key 'modle'"):
        resolve_run_config("debug", bad)


def test_newer_keys_change_the_hash_only_when_set() -> None:
    """Resubmitting a sweep written before these keys existed must find its points again."""
    base = resolve_run_config("debug")
    data = base.to_dict()
    for section, key in (("optim", "schedule"), ("optim", "decay_fraction"), ("train", "micro_batch_size"),
                         ("train", "devices"), ("train", "strategy"), ("train", "log_checkpoint"),
                         ("moe", "router"), ("data", "token_dtype")):
        del data[section][key]  # what an older checkpoint or study recorded
    assert RunConfig.from_dict(data).config_hash() == base.config_hash()
    assert resolve_run_config("debug", None, {"optim.schedule": "wsd"}).config_hash() != base.config_hash()
    assert resolve_run_config("debug", None, {"train.devices": 2}).config_hash() != base.config_hash()
