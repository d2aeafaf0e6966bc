"""FLOP- and parameter-matched variants derived from an SMoE baseline (docs/MATCHING.md).

Per MoE layer, with n head/merge projections (d^2 each), the baseline (E_s experts of width F_s,
top-k_s, n_s projections) and a variant (h heads, E experts of width F, top-k) cost:

    multiplications per token   3 d F_s k_s + n_s d^2  =  n d^2 + 3 d F k
    parameters                  3 d F_s E_s + n_s d^2  =  n d^2 + 3 (d/h) F E

so F = (3 d F_s k_s + (n_s - n) d^2) / (3 d k) and E = (3 d F_s E_s + (n_s - n) d^2) / (3 (d/h) F).
F is rounded to a multiple of 4 (fp32 grouped_mm needs 16-byte strides); MH-MoE's E to the
nearest multiple of ``expert_multiple`` (the paper's 41.33 -> 40 and 93 -> 96). Fine-grained
segmentation by m keeps the structure exact: E = m E_s, F = F_s / m, k = m k_s. Whatever rounding
leaves over is reported as ``flops_mismatch_pct`` / ``params_mismatch_pct``, never hidden. Which
rule a variant follows is its ``match`` entry in :mod:`mhmoe.config.variants` (whole, segment, heads).

``mode`` says which projections the experts pay for (the paper leaves Table 4 vs 5 open, 4.5):
    match    the requested ones: every variant costs the baseline (Table 1, the general rule).
    remove   the variant's defaults (both for mhmoe, none otherwise), then the requested ones are
             switched on or off without re-sizing (Table 5: fewer FLOPs without them).
    rematch  none: F fills the projection-free baseline budget, E stays at the default match and
             the requested projections come on top (Table 4: SMoE budget, or SMoE + 2 d^2).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from mhmoe.config.architecture import Architecture, ModelConfig, MoEConfig
from mhmoe.config.base import ConfigError, check, check_choice, from_dict
from mhmoe.config.presets import preset
from mhmoe.config.variants import BASELINE as BASELINE_FFN, VARIANTS, LayerShape, variant, variant_rows
from mhmoe.sizing.budget import moe_layer_params, moe_mults_per_token

MATCHED_FFNS = tuple(key for key, entry in VARIANTS.items() if entry.match is not None)
MATCH_MODES = ("match", "remove", "rematch")
DIM_MULTIPLE = 4
"""Expert widths are multiples of this: fp32 grouped_mm needs every stride to be 16 bytes."""

PAPER_ROWS: dict[str, dict[str, Any]] = {
    label: {"ffn": entry.key, **row} for label, (entry, row) in variant_rows().items() if entry.match is not None
}
"""The routed rows (v2 Table 1, then any other registered variant) by label, as ``match_variant`` keywords."""
VARIANT_NAMES = tuple(variant_rows())
"""Every row by variant label, in the paper's order (dense, smoe, fine_grained, mhmoe-h2, mhmoe-h3)."""


@dataclass(frozen=True, kw_only=True)
class MatchResult:
    """A derived variant: its MoEConfig fields, the exact solution and what rounding left over."""

    ffn: str
    num_experts: int
    top_k: int
    expert_d_ff: int
    heads: int
    head_proj: bool
    merge_proj: bool
    mode: str
    exact_num_experts: float
    """E before rounding (structural m E_s for smoe / fine_grained)."""
    exact_expert_d_ff: float
    """F before rounding to a multiple of 4."""
    moe_mults_per_token: int
    """Experts + head + merge multiplications per token in one MoE layer."""
    baseline_moe_mults_per_token: int
    moe_params: int
    """Expert + head + merge weights of one MoE layer (router and biases excluded)."""
    baseline_moe_params: int
    notes: tuple[str, ...] = ()
    """Human-readable remarks on rounding, for logs and the budget table."""

    @property
    def flops_mismatch_pct(self) -> float:
        return _pct(self.moe_mults_per_token, self.baseline_moe_mults_per_token)

    @property
    def params_mismatch_pct(self) -> float:
        return _pct(self.moe_params, self.baseline_moe_params)

    def moe_overrides(self) -> dict[str, Any]:
        return {
            "num_experts": self.num_experts, "top_k": self.top_k, "expert_d_ff": self.expert_d_ff,
            "heads": self.heads, "head_proj": self.head_proj, "merge_proj": self.merge_proj,
        }

    def overrides(self) -> dict[str, Any]:
        """Nested override dict, merged over the baseline preset like any other overrides."""
        return {"model": {"ffn": self.ffn}, "moe": self.moe_overrides()}

    def apply(self, model: ModelConfig, baseline: MoEConfig) -> tuple[ModelConfig, MoEConfig]:
        """The variant's configs; other baseline fields (shared expert, capacity ...) carry over."""
        return dataclasses.replace(model, ffn=self.ffn), dataclasses.replace(baseline, **self.moe_overrides())

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["notes"] = list(self.notes)
        out.update(flops_mismatch_pct=self.flops_mismatch_pct, params_mismatch_pct=self.params_mismatch_pct)
        return out


def _pct(value: int, reference: int) -> float:
    return 100.0 * (value - reference) / reference


def _round_to(value: Fraction, multiple: int) -> int:
    """Nearest multiple (halves round up), at least one multiple."""
    return max(multiple, multiple * math.floor(value / multiple + Fraction(1, 2)))


def _fmt(value: Fraction) -> str:
    return f"{float(value):.2f}".rstrip("0").rstrip(".")


def _check_request(
    model: ModelConfig, baseline: MoEConfig, *, ffn: str, heads: int, top_k: int | None,
    granularity: int, mode: str, expert_multiple: int,
) -> None:
    entry = variant(ffn)
    if entry.match is None:  # dense has no MoE layer; it keeps model.d_ff
        raise ConfigError(f"model.ffn={ffn!r} has no matching rule (mhmoe.config.variants); matched variants: "
                          f"{list(MATCHED_FFNS)}")
    check_choice("mode", mode, MATCH_MODES)
    check(baseline.heads == 1, f"moe.heads={baseline.heads} in the baseline: it must be a whole-token SMoE")
    check(heads >= 1, f"moe.heads={heads} must be >= 1")
    multi = [key for key in MATCHED_FFNS if VARIANTS[key].multi_head]
    check(entry.multi_head or heads == 1, f"moe.heads={heads} needs model.ffn in {multi} (got {ffn!r})"
          if len(multi) != 1 else f"moe.heads={heads} needs model.ffn={multi[0]!r} (got {ffn!r})")
    check(model.d_model % heads == 0, f"moe.heads={heads} does not divide model.d_model={model.d_model}")
    check(top_k is None or top_k >= 1, f"moe.top_k={top_k} must be >= 1")
    check(granularity >= 1, f"granularity={granularity} must be >= 1")
    check(expert_multiple >= 1, f"expert_multiple={expert_multiple} must be >= 1")


def _exact_d_ff(budget: int, n: int, d: int, per_unit_width: int) -> Fraction:
    """F such that n d^2 + (expert multiplications at F) equals the baseline's multiplications."""
    exact = Fraction(budget - n * d * d, per_unit_width)
    check(
        exact > 0,
        f"moe.expert_d_ff would be {_fmt(exact)} (<= 0): {n} head/merge projections (d^2 each) cost more "
        f"than the baseline's {budget:,} expert and projection multiplications",
    )
    return exact


def _exact_experts(budget: int, n: int, d: int, per_expert: int) -> Fraction:
    """E such that n d^2 + (expert weights of E experts) equals the baseline's expert + projection weights."""
    exact = Fraction(budget - n * d * d, per_expert)
    check(exact > 0, f"moe.num_experts would be {_fmt(exact)} (<= 0): the projections exceed the baseline")
    return exact


def _request_shape(model: ModelConfig, baseline: MoEConfig, ffn: str, **moe: Any) -> LayerShape:
    """The variant's layer shape at the requested heads, k and projections (expert count and width are
    then solved from its per-unit counts, so the matcher counts what the budget and the builder use)."""
    top_k = moe["top_k"]
    provisional = dataclasses.replace(baseline, **moe, num_experts=max(top_k, baseline.num_experts))
    shape = Architecture(model=dataclasses.replace(model, ffn=ffn), moe=provisional).layer
    assert shape is not None  # _check_request refused a variant without a routed layer
    return shape


def match_variant(
    model: ModelConfig,
    baseline: MoEConfig,
    *,
    ffn: str,
    heads: int = 1,
    top_k: int | None = None,
    granularity: int = 2,
    head_proj: bool | None = None,
    merge_proj: bool | None = None,
    mode: str = "match",
    expert_multiple: int = 8,
) -> MatchResult:
    """Size a variant's experts to the SMoE ``baseline``'s budget (see the module docstring).

    ``top_k`` defaults by the variant's matching rule: k_s (whole: smoe), m k_s (segment:
    fine_grained) and h k_s (heads: mhmoe, the paper's k = h at top-1). ``granularity`` (m) only
    applies to the segment rule. ``head_proj`` / ``merge_proj`` default to the variant's default.
    Expert multiplications and weights come from the variant's :class:`~mhmoe.config.variants.LayerShape`.
    """
    _check_request(model, baseline, ffn=ffn, heads=heads, top_k=top_k, granularity=granularity,
                   mode=mode, expert_multiple=expert_multiple)
    entry = variant(ffn)
    rule = entry.match
    assert rule is not None  # _check_request refused a variant without a matching rule
    m = granularity if rule == "segment" else 1
    k = top_k or {"whole": 1, "segment": m, "heads": heads}[rule] * baseline.top_k
    default = entry.projections
    head = default if head_proj is None else head_proj
    merge = default if merge_proj is None else merge_proj
    base = Architecture(model=dataclasses.replace(model, ffn=BASELINE_FFN), moe=baseline)
    base_mults, base_params = moe_mults_per_token(base), moe_layer_params(base)
    n_default, n = 2 * default, int(head) + int(merge)
    # Projections the expert width pays for, and those the expert count was matched with.
    n_width, n_count = {"match": (n, n), "remove": (n_default, n_default), "rematch": (0, n_default)}[mode]
    shape = _request_shape(model, baseline, ffn, heads=heads, top_k=k, head_proj=head, merge_proj=merge)
    d, per_unit_width = model.d_model, dataclasses.replace(shape, expert_d_ff=1).expert_mults

    notes: list[str] = []
    exact_f = _exact_d_ff(base_mults, n_width, d, per_unit_width)
    d_ff = _round_to(exact_f, DIM_MULTIPLE)
    if d_ff != exact_f:
        notes.append(f"expert_d_ff {_fmt(exact_f)} rounded to {d_ff} (multiple of {DIM_MULTIPLE})")
    if rule == "heads":
        # The expert count is solved at the width the n_count projections leave (rematch keeps it).
        d_ff_count = d_ff if n_count == n_width else _round_to(
            _exact_d_ff(base_mults, n_count, d, per_unit_width), DIM_MULTIPLE)
        per_expert = dataclasses.replace(shape, num_experts=1, expert_d_ff=d_ff_count).expert_params
        exact_e = _exact_experts(base_params, n_count, d, per_expert)
        at_least_k = expert_multiple * math.ceil(k / expert_multiple)
        num_experts = max(_round_to(exact_e, expert_multiple), at_least_k)
        if num_experts != exact_e:
            notes.append(f"num_experts {_fmt(exact_e)} rounded to {num_experts} (multiple of {expert_multiple})")
    else:  # segmentation (m = 1 for smoe) keeps the expert count structural
        exact_e = Fraction(m * baseline.num_experts)
        num_experts = m * baseline.num_experts

    # The derived MoE fields are checked here (moe.top_k <= moe.num_experts ...); the architecture
    # they make is validated once, where the caller builds its config.
    dataclasses.replace(baseline, num_experts=num_experts, top_k=k, expert_d_ff=d_ff, heads=heads)
    derived = dataclasses.replace(shape, num_experts=num_experts, expert_d_ff=d_ff)
    return MatchResult(
        ffn=ffn, num_experts=num_experts, top_k=k, expert_d_ff=d_ff, heads=heads, head_proj=head,
        merge_proj=merge, mode=mode, exact_num_experts=float(exact_e), exact_expert_d_ff=float(exact_f),
        moe_mults_per_token=derived.matched_mults, baseline_moe_mults_per_token=base_mults,
        moe_params=derived.matched_params, baseline_moe_params=base_params,
        notes=tuple(notes),
    )


def preset_configs(preset_name_or_dict: str | Mapping[str, Any]) -> tuple[ModelConfig, MoEConfig]:
    """The backbone and SMoE baseline a preset (name or nested dict) describes."""
    data = preset(preset_name_or_dict) if isinstance(preset_name_or_dict, str) else preset_name_or_dict
    model = from_dict(ModelConfig, data.get("model", {}), prefix="model")
    return model, from_dict(MoEConfig, data.get("moe", {}), prefix="moe")


def paper_matches(preset_name_or_dict: str | Mapping[str, Any], **kwargs: Any) -> dict[str, MatchResult]:
    """``match_variant`` for each routed Table 1 row; ``kwargs`` (mode, expert_multiple) apply to all."""
    model, baseline = preset_configs(preset_name_or_dict)
    return {name: match_variant(model, baseline, **row, **kwargs) for name, row in PAPER_ROWS.items()}


def paper_variants(preset_name_or_dict: str | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Nested override dicts for the Table 1 rows: dense, smoe, fine_grained, mhmoe-h2, mhmoe-h3.

    Dense (a variant without a matching rule) keeps ``model.d_ff``: its FFN in the MoE positions is
    the same dense SwiGLU, so every block is dense and it matches the (top-1) SMoE in computation,
    not in parameters.
    """
    matches = paper_matches(preset_name_or_dict)
    return {name: matches[name].overrides() if name in matches else {"model": {"ffn": entry.key}}
            for name, (entry, _) in variant_rows().items()}


__all__ = [
    "BASELINE_FFN",
    "MATCHED_FFNS",
    "MATCH_MODES",
    "MatchResult",
    "PAPER_ROWS",
    "VARIANT_NAMES",
    "match_variant",
    "paper_matches",
    "paper_variants",
    "preset_configs",
]
