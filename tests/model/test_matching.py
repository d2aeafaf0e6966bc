"""The matching solver reproduces the v2 paper's configs and the Table 4/5 ablation modes."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mhmoe.config.architecture import ModelConfig, MoEConfig, check_architecture
from mhmoe.config.base import ConfigError, from_dict
from mhmoe.config.presets import preset
from mhmoe.sizing.budget import count_mults, moe_layer_params, moe_mults_per_token
from mhmoe.sizing.matching import (
    MATCH_MODES,
    VARIANT_NAMES,
    match_variant,
    paper_matches,
    paper_variants,
    preset_configs,
)
from tests.model.fixtures import arch

D = 768
SMOE_MULTS = 4_718_592  # 3 * 768 * 2048 * 1 (docs/MATCHING.md table)
PROJ = 2 * D * D  # head + merge weights, 1,179,648
TABLE_1_ROUTED = ("smoe", "fine_grained", "mhmoe-h2", "mhmoe-h3")


@pytest.fixture
def paper() -> tuple[ModelConfig, MoEConfig]:
    return preset_configs("paper-v2")


@pytest.mark.parametrize(
    ("name", "experts", "top_k", "d_ff", "heads", "moe_params", "params_pct"),
    [
        pytest.param("smoe", 8, 1, 2048, 1, 37_748_736, 0.0, id="smoe"),
        pytest.param("fine_grained", 16, 2, 1024, 1, 37_748_736, 0.0, id="fine_grained"),
        pytest.param("mhmoe-h2", 40, 2, 768, 2, 35_389_440 + PROJ, -3.125, id="mhmoe_h2"),
        pytest.param("mhmoe-h3", 96, 3, 512, 3, 37_748_736 + PROJ, 3.125, id="mhmoe_h3"),
    ],
)
def test_paper_table_reproduced(name, experts, top_k, d_ff, heads, moe_params, params_pct):
    result = paper_matches("paper-v2")[name]
    assert (result.num_experts, result.top_k, result.expert_d_ff, result.heads) == (experts, top_k, d_ff, heads)
    assert result.moe_mults_per_token == SMOE_MULTS
    assert result.flops_mismatch_pct == 0.0
    assert result.moe_params == moe_params
    assert result.params_mismatch_pct == pytest.approx(params_pct)
    assert (result.head_proj, result.merge_proj) == ((True, True) if name.startswith("mhmoe") else (False, False))


def test_exact_expert_counts_before_rounding():
    matches = paper_matches("paper-v2")
    assert matches["mhmoe-h2"].exact_num_experts == pytest.approx(41.3333, abs=1e-3)
    assert matches["mhmoe-h3"].exact_num_experts == 93.0  # exactly the SMoE expert params; 96 is the paper's
    assert "41.33 rounded to 40" in matches["mhmoe-h2"].notes[0]


def test_fine_grained_segmentation_is_exact(paper):
    model, baseline = paper
    for m in (2, 4, 8):
        result = match_variant(model, baseline, ffn="fine_grained", granularity=m)
        assert (result.num_experts, result.expert_d_ff, result.top_k) == (8 * m, 2048 // m, m)
        assert result.moe_params == result.baseline_moe_params
        assert result.params_mismatch_pct == 0.0 and result.flops_mismatch_pct == 0.0


def test_rematch_h2_without_projections_enlarges_experts(paper):
    model, baseline = paper
    result = match_variant(model, baseline, ffn="mhmoe", heads=2, head_proj=False, merge_proj=False, mode="rematch")
    assert (result.expert_d_ff, result.top_k, result.num_experts) == (1024, 2, 40)
    assert result.moe_mults_per_token == SMOE_MULTS


def test_rematch_h2_with_projections_adds_them_on_top(paper):
    model, baseline = paper
    result = match_variant(model, baseline, ffn="mhmoe", heads=2, head_proj=True, merge_proj=True, mode="rematch")
    assert (result.expert_d_ff, result.top_k, result.num_experts) == (1024, 2, 40)
    assert result.moe_mults_per_token == SMOE_MULTS + 2 * 768**2
    assert result.flops_mismatch_pct == pytest.approx(25.0)


def test_remove_keeps_the_flop_matched_experts(paper):
    model, baseline = paper
    no_head = match_variant(model, baseline, ffn="mhmoe", heads=2, head_proj=False, mode="remove")
    assert (no_head.num_experts, no_head.expert_d_ff, no_head.head_proj, no_head.merge_proj) == (40, 768, False, True)
    assert no_head.moe_mults_per_token == 3_538_944 + D * D
    neither = match_variant(model, baseline, ffn="mhmoe", heads=2, head_proj=False, merge_proj=False, mode="remove")
    assert neither.moe_mults_per_token == 3_538_944
    assert neither.flops_mismatch_pct == pytest.approx(-25.0)


@pytest.mark.parametrize("mode", ["remove", "rematch"])
@pytest.mark.parametrize(("ffn", "experts", "d_ff"), [("smoe", 8, 2048), ("fine_grained", 16, 1024)])
def test_smoe_with_head_and_merge_keeps_experts(paper, mode, ffn, experts, d_ff):
    model, baseline = paper
    result = match_variant(model, baseline, ffn=ffn, head_proj=True, merge_proj=True, mode=mode)
    assert (result.num_experts, result.expert_d_ff) == (experts, d_ff)
    assert result.moe_mults_per_token == SMOE_MULTS + PROJ


def test_match_and_remove_agree_at_default_projections(paper):
    model, baseline = paper
    results = {match_variant(model, baseline, ffn="mhmoe", heads=3, mode=mode) for mode in ("match", "remove")}
    assert {(r.num_experts, r.expert_d_ff) for r in results} == {(96, 512)}


def test_match_mode_pays_for_one_projection(paper):
    model, baseline = paper
    result = match_variant(model, baseline, ffn="mhmoe", heads=2, head_proj=True, merge_proj=False)
    assert result.expert_d_ff == (3 * 2048 - D) // 6 == 896
    assert result.flops_mismatch_pct == 0.0


def test_non_integral_width_is_rounded_to_multiple_of_4_and_reported():
    model = ModelConfig(d_model=768, n_heads=12)
    baseline = MoEConfig(num_experts=8, top_k=1, expert_d_ff=2050)
    fine = match_variant(model, baseline, ffn="fine_grained")
    assert fine.exact_expert_d_ff == 1025 and fine.expert_d_ff == 1024
    assert fine.flops_mismatch_pct == pytest.approx(-100 / 1025)
    assert any("rounded to 1024" in note for note in fine.notes)
    h2 = match_variant(model, baseline, ffn="mhmoe", heads=2)
    assert h2.exact_expert_d_ff == 769 and h2.expert_d_ff == 768 and h2.flops_mismatch_pct < 0


@pytest.mark.parametrize("name", ["cpu-small", "debug"])
def test_small_presets_derive_valid_configs(name):
    model, baseline = preset_configs(name)
    for mode in MATCH_MODES:
        for row, result in paper_matches(name, mode=mode).items():
            assert result.expert_d_ff > 0 and result.expert_d_ff % 4 == 0, (row, mode)
            variant_model, variant_moe = result.apply(model, baseline)
            check_architecture(variant_model, variant_moe)
            # The round trip: what the matcher reports is what the budget counts for the derived config.
            assert result.moe_mults_per_token == moe_mults_per_token(arch(variant_model, variant_moe))
            assert result.moe_params == moe_layer_params(arch(variant_model, variant_moe))
    # Both presets are sized so the Table 1 widths come out exact, like the paper's.
    table_1 = {label: r for label, r in paper_matches(name).items() if label in TABLE_1_ROUTED}
    assert all(r.flops_mismatch_pct == 0.0 for r in table_1.values())
    assert {r.num_experts for r in table_1.values()} == {8, 16, 40, 96}


def test_a_preset_that_cannot_match_exactly_reports_instead_of_failing():
    model = ModelConfig(d_model=40, n_heads=4, d_ff=60)
    baseline = MoEConfig(num_experts=4, top_k=1, expert_d_ff=60)
    result = match_variant(model, baseline, ffn="mhmoe", heads=2)  # exact F = (180 - 80) / 6 = 16.67
    assert result.expert_d_ff == 16 and result.flops_mismatch_pct != 0.0
    assert result.num_experts % 8 == 0 and result.num_experts >= result.top_k


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"ffn": "mhmoe", "heads": 5}, "moe.heads", id="heads-not-dividing-d"),
        pytest.param({"ffn": "smoe", "heads": 2}, "moe.heads", id="smoe-with-heads"),
        pytest.param({"ffn": "dense"}, "model.ffn", id="dense-not-matchable"),
        pytest.param({"ffn": "mhmoe", "mode": "bogus"}, "mode", id="unknown-mode"),
        pytest.param({"ffn": "fine_grained", "granularity": 0}, "granularity", id="granularity"),
        pytest.param({"ffn": "smoe", "top_k": 9}, "moe.top_k", id="top_k-above-experts"),
        pytest.param({"ffn": "mhmoe", "expert_multiple": 0}, "expert_multiple", id="expert-multiple"),
    ],
)
def test_invalid_requests_name_the_field(paper, kwargs, field):
    model, baseline = paper
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        match_variant(model, baseline, **kwargs)


def test_non_positive_derived_width_names_expert_d_ff():
    model = ModelConfig(d_model=768, n_heads=12)
    small = MoEConfig(num_experts=8, top_k=1, expert_d_ff=256)  # 3 * 256 < 2 * 768: projections cost more
    with pytest.raises(ConfigError, match=r"moe\.expert_d_ff"):
        match_variant(model, small, ffn="mhmoe", heads=2)


def test_baseline_must_route_whole_tokens(paper):
    model, baseline = paper
    with pytest.raises(ConfigError, match=r"moe\.heads=2 in the baseline"):
        match_variant(model, dataclasses.replace(baseline, heads=2), ffn="mhmoe", heads=2)


def test_paper_variants_are_overrides_that_build(paper):
    variants = paper_variants("paper-v2")
    assert tuple(variants) == VARIANT_NAMES
    assert variants["dense"] == {"model": {"ffn": "dense"}}  # keeps model.d_ff
    assert variants["mhmoe-h3"]["moe"] == {
        "num_experts": 96, "top_k": 3, "expert_d_ff": 512, "heads": 3, "head_proj": True, "merge_proj": True,
    }
    base = preset("paper-v2")
    for name, overrides in variants.items():
        model = from_dict(ModelConfig, {**base["model"], **overrides["model"]})
        moe = from_dict(MoEConfig, {**base["moe"], **overrides.get("moe", {})})
        check_architecture(model, moe)
        per_layer = {layer.moe + layer.dense_ffn for layer in count_mults(arch(model, moe)).per_layer}
        assert per_layer == {SMOE_MULTS}, name  # dense and every routed row: same FFN compute per block
    assert paper_variants(preset("debug")) == paper_variants("debug")  # name or nested dict


def test_shared_expert_and_other_baseline_fields_carry_over(paper):
    model, baseline = paper
    baseline = dataclasses.replace(baseline, shared_expert_d_ff=2048, capacity_mode="capacity")
    result = match_variant(model, baseline, ffn="mhmoe", heads=2)
    assert (result.num_experts, result.expert_d_ff) == (40, 768)  # the shared expert is not matched
    _, moe = result.apply(model, baseline)
    assert (moe.shared_expert_d_ff, moe.capacity_mode, moe.heads) == (2048, "capacity", 2)
    assert moe_layer_params(arch(dataclasses.replace(model, ffn="mhmoe"), moe)) == result.moe_params


def test_result_serialises_with_mismatches():
    data = json.loads(json.dumps(paper_matches("paper-v2")["mhmoe-h2"].as_dict()))
    assert data["params_mismatch_pct"] == pytest.approx(-3.125)
    assert data["flops_mismatch_pct"] == 0.0 and data["mode"] == "match"
