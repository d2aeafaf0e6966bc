"""The variant and router registry (mhmoe/config/variants.py): one entry per variant or router, read by
configs, the model, the budget, the matcher, MLflow naming and analysis/."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mhmoe.config.architecture
from mhmoe.commands.budget import budget_table
from mhmoe.config import variants
from mhmoe.config.architecture import Architecture, ConfigError, MoEConfig, QuantConfig, is_quantized
from mhmoe.config.run import resolve_run_config
from mhmoe.model import FFN_REGISTRY, build_model
from mhmoe.model.moe import MoELayer
from mhmoe.model.registry import router_registry
from mhmoe.model.routing import RouterOutput, TopKRouter
from mhmoe.sizing.budget import moe_mults_per_token, summary, train_flops_per_token
from mhmoe.sizing.matching import MATCHED_FFNS, PAPER_ROWS, VARIANT_NAMES
from mhmoe.sizing.memory import estimate_memory
from tests.model.fixtures import arch, tiny_model, tiny_moe


def test_every_entry_resolves_to_its_module() -> None:
    assert set(FFN_REGISTRY) == set(variants.VARIANTS)
    assert all(callable(builder) for builder in FFN_REGISTRY.values())
    assert router_registry() == {"topk": TopKRouter}


PAPER_TABLE_1 = ("Dense", "SMoE", "Fine-grained SMoE", "MH-MoE (head=2)", "MH-MoE (head=3)")
"""The rows of the v2 paper's Table 1, by the paper's names, in its order."""


def test_paper_rows_are_the_papers_table_names_in_its_order() -> None:
    """The registry's paper rows come first, in Table 1's order and names; any other registered
    variant follows them (and is not a paper model)."""
    rows = list(variants.variant_rows().items())
    paper = [(label, entry.paper_name(int(row.get("heads", 1)))) for label, (entry, row) in rows
             if entry.is_paper_model(int(row.get("heads", 1)))]
    assert tuple(name for _, name in paper) == PAPER_TABLE_1
    assert [label for label, _ in paper] == ["dense", "smoe", "fine_grained", "mhmoe-h2", "mhmoe-h3"]
    assert VARIANT_NAMES[: len(paper)] == tuple(label for label, _ in paper)
    assert [key for key, entry in variants.VARIANTS.items() if entry.in_paper] == ["dense", "smoe", "fine_grained",
                                                                                   "mhmoe"]
    assert variants.FFN_VARIANTS[:4] == ("dense", "smoe", "fine_grained", "mhmoe")
    assert set(MATCHED_FFNS) == {key for key, entry in variants.VARIANTS.items() if entry.match is not None}
    assert {"smoe", "fine_grained", "mhmoe"} <= set(MATCHED_FFNS)
    assert PAPER_ROWS["fine_grained"] == {"ffn": "fine_grained", "granularity": 2}


@pytest.mark.parametrize(
    ("ffn", "moe", "label"),
    [
        ("dense", {"heads": 1, "shared_expert_d_ff": 64, "head_proj": True}, "dense"),
        ("smoe", {"heads": 1}, "smoe"),
        ("smoe", {"heads": 1, "head_proj": True, "merge_proj": True}, "smoe+head+merge"),
        ("fine_grained", {"heads": 1, "shared_expert_d_ff": 64}, "fine_grained+shared"),
        ("mhmoe", {"heads": 3}, "mhmoe-h3"),
        ("mhmoe", {"heads": 2, "head_proj": False}, "mhmoe-h2+nohead+merge"),
        ("mhmoe", {"heads": 2, "head_proj": True, "merge_proj": True}, "mhmoe-h2"),
    ],
)
def test_one_label_rule_for_run_names_budget_rows_and_analysis(ffn: str, moe: dict, label: str) -> None:
    """The registry's label is what RunConfig.variant tags a run with and what analysis/ rebuilds
    from the logged params of a run that lacks the tag."""
    from analysis.frame import annotate, coerce_param

    overrides = {"model.ffn": ffn, **{f"moe.{k}": v for k, v in moe.items()}}
    for bits, suffix in ((16.0, ""), (1.58, "+w1.58")):
        cfg = resolve_run_config("debug", None, {**overrides, "quant.weight_bits": bits})
        assert cfg.variant == label + suffix
        logged = pd.DataFrame([{f"params/{k}": str(v) for k, v in cfg.flat().items()}])  # MLflow keeps text
        assert annotate(logged.apply(coerce_param))["variant"].iloc[0] == label + suffix


def test_budget_rows_are_named_by_the_registry_label() -> None:
    rows = budget_table("debug")
    assert [r["variant"] for r in rows[::2]] == list(VARIANT_NAMES)
    assert all(r["label"] == r["variant"] for r in rows)


def test_unknown_router_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"moe\.router='expert_choice' is not allowed; choose one of \['topk'\]"):
        MoEConfig(router="expert_choice")


def test_matching_a_variant_without_a_rule_is_a_clear_error() -> None:
    from mhmoe.sizing.matching import match_variant

    with pytest.raises(ConfigError, match=r"model\.ffn='dense' has no matching rule"):
        match_variant(tiny_model("smoe"), tiny_moe(heads=1), ffn="dense")


def test_quantized_is_one_rule() -> None:
    assert not QuantConfig().enabled and QuantConfig(weight_bits=8).enabled
    assert list(is_quantized(pd.Series([16.0, 8.0, 1.58]))) == [False, True, True]


def test_architecture_is_validated_once_per_resolved_config(monkeypatch) -> None:
    """Resolving a run config checks the architecture once; the model, budget and memory estimate
    take the resolved Architecture and do not check it again."""
    calls = []
    original = mhmoe.config.architecture.check_architecture
    monkeypatch.setattr(mhmoe.config.architecture, "check_architecture", lambda *a: calls.append(a) or original(*a))
    cfg = resolve_run_config("debug", None, {"model.ffn": "mhmoe", "moe.heads": 2})
    assert len(calls) == 1
    build_model(cfg.architecture)
    summary(cfg.architecture, seq_len=cfg.train.seq_len)
    train_flops_per_token(cfg.architecture, seq_len=cfg.train.seq_len)
    assert moe_mults_per_token(cfg.architecture) == cfg.architecture.layer.matched_mults
    MoELayer(cfg.architecture)
    estimate_memory(cfg, "32-true")
    assert cfg.variant == "mhmoe-h2" and len(calls) == 1
    with pytest.raises(ConfigError, match="moe.heads=5 does not divide model.d_model=48"):
        Architecture(model=tiny_model("mhmoe"), moe=tiny_moe(heads=5))


class CyclicRouter(nn.Module):
    """A test router: sub-token s goes to experts s mod E, (s + 1) mod E ... with equal gates, and the
    last choice of every odd sub-token is dropped."""

    def __init__(self, d_in: int, moe: MoEConfig) -> None:
        super().__init__()
        self.cfg = moe
        self.gate = nn.Linear(d_in, moe.num_experts, bias=False)  # gives the telemetry its logits

    def forward(self, x_Sd: torch.Tensor) -> RouterOutput:
        S, E, K = x_Sd.shape[0], self.cfg.num_experts, self.cfg.top_k
        experts_SK = (torch.arange(S)[:, None] + torch.arange(K)[None, :]) % E
        keep_SK = torch.ones(S, K, dtype=torch.bool)
        keep_SK[1::2, -1] = False
        logits_SE = self.gate(x_Sd).float()
        probs_SE = logits_SE.softmax(-1)
        lse_S = torch.logsumexp(logits_SE, -1)
        return RouterOutput(gates_SK=torch.full((S, K), 1.0 / K), experts_SK=experts_SK, keep_SK=keep_SK,
                            logits_SE=logits_SE, probs_SE=probs_SE, lse_S=lse_S,
                            aux_loss=lse_S.new_zeros(()), z_loss=lse_S.new_zeros(()))


def test_a_new_router_is_one_class_and_one_registry_entry(monkeypatch) -> None:
    """The MoE layer computes exactly what the router decided: each kept (sub-token, expert) pair,
    weighted by its gate; dropped ones contribute nothing."""
    monkeypatch.setitem(variants.ROUTERS, "cyclic", variants.RouterKind(
        key="cyclic", summary="test router", module="tests.model.test_variants:CyclicRouter"))
    torch.manual_seed(0)
    layer = MoELayer(arch(tiny_model("mhmoe"), tiny_moe(heads=2, top_k=2, router="cyclic")))
    assert isinstance(layer.router, CyclicRouter)
    x = torch.randn(1, 5, 48)
    y, stats = layer(x)
    sub = layer.head(x.reshape(5, 48)).reshape(10, 24)
    expected = torch.zeros(10, 24)
    w = layer.experts
    for s in range(10):
        for k in range(2 if s % 2 == 0 else 1):
            e = (s + k) % 6
            expected[s] += 0.5 * ((F.silu(sub[s] @ w.w1[e]) * (sub[s] @ w.w3[e])) @ w.w2[e])
    torch.testing.assert_close(y, layer.merge(expected.reshape(5, 48)).view(1, 5, 48), atol=1e-5, rtol=1e-5)
    assert stats.dropped_frac.item() == pytest.approx(5 / 20)


def test_dry_run_shows_the_resolved_router() -> None:
    out = subprocess.run([sys.executable, "-m", "mhmoe.cli", "train", "--preset", "debug", "--dry-run"],
                         capture_output=True, text=True, check=True).stdout
    assert "router: topk" in out
