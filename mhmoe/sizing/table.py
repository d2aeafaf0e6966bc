"""The v2 Table 1 budget table of a preset: parameters and FLOPs of every paper variant.

Every routed variant is derived from the preset's SMoE baseline by :mod:`mhmoe.sizing.matching`; each is
shown in full precision and with BitNet b1.58 (same counts, split into quantized and
full-precision parameters by the default placement of :class:`mhmoe.config.architecture.QuantConfig`).
Printed by ``mhmoe budget`` and ``mhmoe smoke``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mhmoe.config.architecture import Architecture, ModelConfig, QuantConfig
from mhmoe.config.presets import preset
from mhmoe.config.variants import variant_rows
from mhmoe.sizing.budget import count_mults, count_params, moe_layer_params, moe_mults_per_token
from mhmoe.sizing.matching import BASELINE_FFN, MatchResult, paper_matches, preset_configs
from mhmoe.text_table import format_table as text_table

BITNET = QuantConfig(weight_bits=1.58)
FULL_PRECISION = QuantConfig()


def _pct(value: int, reference: int) -> float:
    return 100.0 * (value - reference) / reference


def _default_seq_len(data: Mapping[str, Any], model: ModelConfig) -> int:
    return int(data.get("train", {}).get("seq_len") or model.max_seq_len)


def _row(
    name: str, arch: Architecture, *, seq_len: int, baseline: tuple[int, int], match: MatchResult | None,
) -> dict[str, Any]:
    model, moe = arch.model, arch.moe
    params = count_params(arch)
    mults = count_mults(arch, seq_len=seq_len)
    moe_mults, moe_params = moe_mults_per_token(arch), moe_layer_params(arch)
    routed = arch.routes
    return {
        "variant": name,
        "label": arch.label,
        "bitnet": arch.quant.enabled,
        "ffn": model.ffn,
        "num_experts": moe.num_experts if routed else None,
        "top_k": moe.top_k if routed else None,
        "expert_d_ff": moe.expert_d_ff if routed else None,
        "heads": moe.heads if routed else None,
        "head_proj": arch.head_proj if routed else None,
        "merge_proj": arch.merge_proj if routed else None,
        "exact_num_experts": match.exact_num_experts if match else None,
        # For dense: the dense FFN that sits where the MoE layer would.
        "moe_mults_per_token": moe_mults,
        "router_mults_per_token": model.d_model * moe.num_experts if routed else 0,
        "moe_layer_params": moe_params,
        "total_params": params.total,
        "active_params": params.active,
        "quantized_params": params.quantized,
        "full_precision_params": params.full_precision,
        "params_mismatch_pct": _pct(moe_params, baseline[1]),
        "flops_mismatch_pct": _pct(moe_mults, baseline[0]),
        "seq_len": seq_len,
        "forward_mults_per_token": mults.total,
        "train_flops_per_token": 6 * mults.total,
        "notes": list(match.notes) if match else [],
    }


def budget_table(preset_name_or_dict: str | Mapping[str, Any], *, seq_len: int | None = None) -> list[dict[str, Any]]:
    """One row per Table 1 variant by label (dense, smoe, fine_grained, mhmoe-h2, mhmoe-h3), each
    without and with BitNet. Mismatches are MoE-layer numbers relative to the preset's SMoE baseline."""
    data = preset(preset_name_or_dict) if isinstance(preset_name_or_dict, str) else preset_name_or_dict
    model, baseline = preset_configs(data)
    seq_len = _default_seq_len(data, model) if seq_len is None else seq_len
    smoe = Architecture(model=dataclasses.replace(model, ffn=BASELINE_FFN), moe=baseline)
    reference = (moe_mults_per_token(smoe), moe_layer_params(smoe))
    matches = paper_matches(data)
    rows = []
    for name, (entry, _) in variant_rows().items():
        match = matches.get(name)  # None: a variant without a matching rule (dense) keeps its sizes
        variant_model, variant_moe = (match.apply(model, baseline) if match
                                      else (dataclasses.replace(model, ffn=entry.key), baseline))
        for quant in (FULL_PRECISION, BITNET):
            arch = Architecture(model=variant_model, moe=variant_moe, quant=quant)
            rows.append(_row(name, arch, seq_len=seq_len, baseline=reference, match=match))
    return rows


def _si(value: float) -> str:
    """Compact count: 109.53M, 212.7K, 884.56M, 1.23G."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.2f}{suffix}"
    return str(value)


def _opt(value: Any) -> str:
    return "-" if value is None else str(value)


COLUMNS = (
    ("variant", lambda r: r["variant"] + (" +bitnet" if r["bitnet"] else "")),
    ("total", lambda r: _si(r["total_params"])),
    ("active", lambda r: _si(r["active_params"])),
    ("quant/fp", lambda r: f"{_si(r['quantized_params'])}/{_si(r['full_precision_params'])}"
     if r["bitnet"] else "-"),
    ("moe mults/tok", lambda r: f"{r['moe_mults_per_token']:,}"),
    ("E", lambda r: _opt(r["num_experts"])),
    ("d_ff", lambda r: _opt(r["expert_d_ff"])),
    ("k", lambda r: _opt(r["top_k"])),
    ("h", lambda r: _opt(r["heads"])),
    ("params vs smoe", lambda r: f"{r['params_mismatch_pct']:+.2f}%"),
    ("flops vs smoe", lambda r: f"{r['flops_mismatch_pct']:+.2f}%"),
    ("train FLOP/tok", lambda r: _si(r["train_flops_per_token"])),
)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Aligned text table of ``budget_table`` rows (also printed by ``mhmoe smoke``)."""
    headers = [header for header, _ in COLUMNS]
    cells = [{header: cell(row) for header, cell in COLUMNS} for row in rows]
    table = text_table(cells, headers, right=headers[1:])
    notes = sorted({f"{row['variant']}: {note}" for row in rows for note in row["notes"]})
    footer = [
        "",
        "params/flops vs smoe: one MoE layer (experts + head/merge weights; router, biases, norms and shared",
        "expert excluded). Dense rows: the dense FFN in that position. Active params count experts with",
        f"multiplicity (h x k per token). Attention scores at seq_len={rows[0]['seq_len']} (no causal discount).",
    ]
    return "\n".join([table, *footer, *(f"note: {n}" for n in notes)])
