"""Parameter / multiplication counting and the ``mhmoe budget`` command."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from mhmoe.commands.budget import main
from mhmoe.config.architecture import ModelConfig, MoEConfig, QuantConfig
from mhmoe.config.base import ConfigError
from mhmoe.sizing.budget import (
    count_mults,
    count_params,
    moe_layer_params,
    moe_mults_per_token,
    summary,
    train_flops_per_token,
)
from mhmoe.sizing.matching import VARIANT_NAMES, paper_matches, preset_configs
from mhmoe.sizing.table import budget_table, format_table
from tests.model.fixtures import arch

D, V, F = 768, 32000, 2048
ATTN = 4 * D * D
SWIGLU = 3 * D * F  # dense FFN = SMoE expert = 4,718,592


@pytest.fixture
def paper() -> tuple[ModelConfig, MoEConfig]:
    return preset_configs("paper-v2")


def _variant(name: str) -> tuple[ModelConfig, MoEConfig]:
    model, baseline = preset_configs("paper-v2")
    return paper_matches("paper-v2")[name].apply(model, baseline)


def test_paper_dense_and_smoe_totals(paper):
    model, baseline = paper
    dense_layer = 2 * D + ATTN + SWIGLU
    dense = count_params(arch(dataclasses.replace(model, ffn="dense"), baseline))
    # v2 setup at the LLaMA 32k vocabulary: about 109.5M
    assert dense.total == V * D + 12 * dense_layer + D == 109_529_856
    assert dense.active == dense.total
    smoe = count_params(arch(model, baseline))
    moe_layer = 2 * D + ATTN + D * 8 + 8 * SWIGLU  # router 768 x 8, no biases
    assert smoe.total == V * D + 6 * dense_layer + 6 * moe_layer + D == 307_747_584  # about 307.7M
    assert smoe.active == dense.total + 6 * D * 8
    assert smoe.embedding == V * D and smoe.lm_head == 0 and smoe.final_norm == D


def test_every_option_counted_like_the_module_tree():
    """Tiny model with everything on, against a parameter-by-parameter tally."""
    d, h, E, k, f, f_s, d_ff, vocab = 8, 2, 8, 2, 4, 6, 12, 16
    model = ModelConfig(ffn="mhmoe", vocab_size=vocab, d_model=d, n_layers=2, n_heads=2, d_ff=d_ff,
                        moe_every=2, tie_embeddings=False)
    moe = MoEConfig(num_experts=E, top_k=k, expert_d_ff=f, heads=h, shared_expert_d_ff=f_s)
    quant = QuantConfig(weight_bits=1.58, subln=True)
    dense_block = (
        2 * d + d          # attention + FFN pre-norms, SubLN before wo
        + 4 * d * d        # wq wk wv wo
        + 3 * d * d_ff + d_ff  # SwiGLU + SubLN before w2
    )
    experts = E * (3 * (d // h) * f + f)  # each expert: w1 w3 w2 + SubLN before its w2
    moe_block = (
        2 * d + d + 4 * d * d
        + 2 * (d * d + d)     # head and merge Linear(d, d) with bias
        + (d // h) * E        # router
        + experts
        + 3 * d * f_s + f_s   # shared expert + its SubLN
    )
    counted = count_params(arch(model, moe, quant))
    assert counted.total == vocab * d * 2 + dense_block + moe_block + d  # untied head, final norm
    assert [layer.total for layer in counted.per_layer] == [dense_block, moe_block]
    # One token: h sub-tokens x k experts, each 3 (d/h) f weights + f SubLN; here h * k < E.
    active_experts = h * k * (3 * (d // h) * f + f)
    assert counted.active == counted.total - experts + active_experts
    assert counted.per_layer[1].active_experts == 3 * d * f * k


def test_active_params_count_experts_with_multiplicity(paper):
    model, baseline = paper
    smoe = count_params(arch(model, baseline))
    h3_model, h3_moe = _variant("mhmoe-h3")
    h3 = count_params(arch(h3_model, h3_moe))
    # 3 sub-tokens x top-3 x 3 x 256 x 512 = 3 d F k: the expert mults per token, not 3 of 96 experts.
    active_experts = 3 * 3 * (3 * 256 * 512)
    assert {layer.active_experts for layer in h3.per_layer if layer.kind == "moe"} == {active_experts}
    assert active_experts == 3 * D * 512 * 3 == 4_718_592 - 2 * D * D
    extra_per_layer = (256 * 96 - D * 8) + 2 * (D * D + D) + (active_experts - SWIGLU)  # router, head/merge
    assert h3.active - smoe.active == 6 * extra_per_layer


@pytest.mark.parametrize(("name", "router"), [("smoe", 6_144), ("mhmoe-h2", 30_720), ("mhmoe-h3", 73_728)])
def test_mults_per_moe_layer(name, router):
    model, moe = _variant(name)
    mults = count_mults(arch(model, moe), seq_len=2048)
    moe_layers = [layer for layer in mults.per_layer if layer.kind == "moe"]
    assert len(moe_layers) == 6
    assert {layer.moe for layer in moe_layers} == {4_718_592}
    assert {layer.router for layer in moe_layers} == {router}  # docs/MATCHING.md: d/h x E x h
    assert moe_mults_per_token(arch(model, moe)) == 4_718_592


def test_forward_mults_and_train_flops(paper):
    model, baseline = paper
    mults = count_mults(arch(model, baseline), seq_len=1024)
    per_block = ATTN + 2 * 1024 * D + SWIGLU
    assert mults.total == 12 * per_block + 6 * D * 8 + V * D
    assert mults.attention_scores == 12 * 2 * 1024 * D
    assert train_flops_per_token(arch(model, baseline), seq_len=1024) == 6 * mults.total
    assert count_mults(arch(model, baseline)).seq_len == model.max_seq_len


def test_bitnet_splits_quantized_and_full_precision(paper):
    model, baseline = paper
    assert count_params(arch(model, baseline)).quantized == 0
    smoe = count_params(arch(model, baseline, QuantConfig(weight_bits=1.58)))
    assert smoe.quantized == 12 * ATTN + 6 * SWIGLU + 6 * 8 * SWIGLU
    assert smoe.full_precision == V * D + 12 * 2 * D + D + 6 * D * 8  # embedding, norms, routers
    h2_model, h2_moe = _variant("mhmoe-h2")
    h2 = count_params(arch(h2_model, h2_moe, QuantConfig(weight_bits=1.58)))
    head_merge = 6 * 2 * (D * D + D)
    assert h2.full_precision == V * D + 12 * 2 * D + D + 6 * 384 * 40 + head_merge
    all_in = count_params(arch(h2_model, h2_moe, QuantConfig(weight_bits=1.58, quantize_head_merge=True,
                                                        quantize_router=True, quantize_embeddings=True)))
    assert all_in.full_precision == 12 * 2 * D + D + 6 * 2 * D  # norms and head/merge biases only


def test_subln_adds_norm_weights(paper):
    model, baseline = paper
    plain = count_params(arch(model, baseline, QuantConfig(weight_bits=1.58)))
    subln = count_params(arch(model, baseline, QuantConfig(weight_bits=1.58, subln=True)))
    assert subln.total - plain.total == 12 * D + 6 * F + 6 * 8 * F
    assert subln.quantized == plain.quantized


def test_matched_layer_params_exclude_router_and_biases():
    model, moe = _variant("mhmoe-h2")
    assert moe_layer_params(arch(model, moe)) == 36_569_088
    no_proj = dataclasses.replace(moe, head_proj=False, merge_proj=False)
    assert moe_layer_params(arch(model, no_proj)) == 35_389_440
    assert moe_mults_per_token(arch(model, no_proj)) == 3_538_944


def test_dense_ignores_moe_config_and_bad_heads_fail(paper):
    model, baseline = paper
    dense = dataclasses.replace(model, ffn="dense")
    assert count_params(arch(dense, dataclasses.replace(baseline, heads=5))).total == count_params(arch(dense)).total
    with pytest.raises(ConfigError, match=r"moe\.heads=5"):
        count_params(arch(dataclasses.replace(model, ffn="mhmoe"), dataclasses.replace(baseline, heads=5)))


def test_summary_has_budget_keys(paper):
    numbers = summary(arch(*paper), seq_len=2048)
    assert numbers["budget.total_params"] == 307_747_584
    assert numbers["budget.moe_mults_per_token"] == 4_718_592
    assert numbers["budget.train_flops_per_token"] == 6 * numbers["budget.forward_mults_per_token"]


@pytest.mark.parametrize("name", ["paper-v2", "cpu-small", "debug"])
def test_budget_table_rows(name):
    rows = budget_table(name)
    assert [(r["variant"], r["bitnet"]) for r in rows] == [(v, b) for v in VARIANT_NAMES for b in (False, True)]
    assert VARIANT_NAMES[:5] == ("dense", "smoe", "fine_grained", "mhmoe-h2", "mhmoe-h3")
    for full, bitnet in zip(rows[::2], rows[1::2]):
        assert full["total_params"] == bitnet["total_params"] and full["quantized_params"] == 0
        assert 0 < bitnet["quantized_params"] < bitnet["total_params"]
    assert all(r["expert_d_ff"] % 4 == 0 for r in rows if r["expert_d_ff"] is not None)
    assert "mhmoe-h3 +bitnet" in format_table(rows)


JSON_KEYS = {"variant", "num_experts", "top_k", "expert_d_ff", "heads", "moe_mults_per_token", "total_params",
             "active_params", "bitnet", "params_mismatch_pct", "flops_mismatch_pct"}


def _check_paper_json(rows: list[dict]) -> None:
    assert len(rows) == 2 * len(VARIANT_NAMES) and all(JSON_KEYS <= set(row) for row in rows)
    h3 = next(r for r in rows if r["variant"] == "mhmoe-h3" and not r["bitnet"])
    assert (h3["num_experts"], h3["top_k"], h3["expert_d_ff"], h3["heads"]) == (96, 3, 512, 3)
    assert h3["params_mismatch_pct"] == pytest.approx(3.125)
    assert {r["moe_mults_per_token"] for r in rows} == {4_718_592}


def test_cli_json_in_process(capsys):
    assert main(["--preset", "paper-v2", "--json", "--seq-len", "512"]) == 0
    rows = json.loads(capsys.readouterr().out)
    _check_paper_json(rows)
    assert {r["seq_len"] for r in rows} == {512}


def test_cli_table_and_errors(capsys):
    assert main(["--preset", "debug"]) == 0
    out = capsys.readouterr().out
    assert "fine_grained +bitnet" in out and "18,432" in out
    assert main(["--preset", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "paper-v2" in err and "cpu-small" in err
    assert main(["--help"]) == 0
    assert "--seq-len" in capsys.readouterr().out


def test_cli_subprocess_json():
    proc = subprocess.run(
        [sys.executable, "-m", "mhmoe.cli", "budget", "--preset", "paper-v2", "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    _check_paper_json(json.loads(proc.stdout))
