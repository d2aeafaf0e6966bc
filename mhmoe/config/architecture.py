"""Architecture configs: the backbone, the MoE layer and BitNet quantization.

One frozen, keyword-only dataclass per component. Each validates its own fields in
``__post_init__``; :class:`Architecture` checks the rules that span components (``moe.heads``
must divide ``model.d_model`` ...) once, and is what the model, the budget and the matcher take.
Errors name the dotted field. What each ``model.ffn`` / ``moe.router`` means: :mod:`mhmoe.config.variants`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, overload

from mhmoe.config.base import ConfigError, check, check_choice, check_positive
from mhmoe.config.variants import FFN_VARIANTS, ROUTER_NAMES, VARIANTS, LayerShape, Variant, router_kind, variant

if TYPE_CHECKING:  # only named in is_quantized's signature; the model side never needs pandas
    import pandas as pd

FULL_PRECISION_BITS = 16.0
"""``quant.weight_bits`` of an unquantized model: quantization is off at this width."""
WEIGHT_BITS = (FULL_PRECISION_BITS, 8.0, 4.0, 2.0, 1.58)
CAPACITY_MODES = ("dropless", "capacity")
DISPATCH_IMPLS = ("auto", "bmm", "grouped_mm", "loop")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Decoder-only backbone (docs/MODEL.md): pre-norm RMSNorm, RoPE, SwiGLU, tied embeddings."""

    ffn: str = "smoe"
    """FFN variant (mhmoe.config.variants): dense, smoe, fine_grained or mhmoe."""
    vocab_size: int = 32000
    """Vocabulary size; the data module overwrites it with the tokenizer's size."""
    d_model: int = 768
    """Model (residual stream) width D."""
    n_layers: int = 12
    """Number of transformer blocks."""
    n_heads: int = 12
    """Attention heads (not MH-MoE heads)."""
    d_ff: int = 2048
    """Hidden width of the dense SwiGLU FFN (dense variant and non-MoE blocks)."""
    moe_every: int = 2
    """Block i (0-based) is an MoE block when (i + 1) % moe_every == 0 (paper: 2)."""
    max_seq_len: int = 2048
    """Context length; sets the RoPE table size."""
    rope_theta: float = 10000.0
    """RoPE base."""
    norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    tie_embeddings: bool = True
    """Share the token embedding with the output projection (paper: yes)."""
    init_std: float = 0.02
    """Std of the token embedding init (tied LM head)."""

    def __post_init__(self) -> None:
        variant(self.ffn)  # an unknown variant lists the known ones
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "moe_every", "max_seq_len"):
            check_positive(f"model.{name}", getattr(self, name))
        check(
            self.d_model % self.n_heads == 0,
            f"model.n_heads={self.n_heads} does not divide model.d_model={self.d_model}",
        )
        check((self.d_model // self.n_heads) % 2 == 0, "model.d_model / model.n_heads must be even for RoPE")
        check_positive("model.rope_theta", self.rope_theta)
        check_positive("model.norm_eps", self.norm_eps)

    @property
    def variant(self) -> Variant:
        """The :mod:`mhmoe.config.variants` entry of ``ffn``."""
        return VARIANTS[self.ffn]

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def is_moe_block(self, index: int) -> bool:
        """Whether block ``index`` (0-based) carries the MoE FFN (official placement rule)."""
        return self.variant.routes and (index + 1) % self.moe_every == 0

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_block(i) for i in range(self.n_layers))


@dataclass(frozen=True, kw_only=True)
class MoEConfig:
    """The routed FFN: experts, router, capacity, MH-MoE head/merge and the shared expert."""

    num_experts: int = 8
    """Experts per MoE layer E (already segmented for fine_grained)."""
    top_k: int = 1
    """Experts chosen per (sub-)token K."""
    router: str = "topk"
    """Router (mhmoe.config.variants.ROUTERS): topk = token choice, each (sub-)token picks its top-k experts."""
    expert_d_ff: int = 2048
    """Hidden width of each SwiGLU expert."""
    heads: int = 1
    """MH-MoE heads h: each token is split into h sub-tokens of size d_model/h."""
    head_proj: bool | None = None
    """Head layer (Linear d->d with bias) before the split; None = the variant's default (on for mhmoe)."""
    merge_proj: bool | None = None
    """Merge layer (Linear d->d with bias) after the concat; None = the variant's default (on for mhmoe)."""
    shared_expert_d_ff: int = 0
    """Hidden width of a dense SwiGLU shared expert added to the routed output; 0 = none."""
    normalize_gates: bool = True
    """Renormalise the k gate values to sum to 1 when top_k > 1 (official code)."""
    capacity_mode: str = "dropless"
    """dropless (every assignment computed) or capacity (official rule, overflow dropped)."""
    capacity_factor: float = 1.0
    """capacity = top_k * ceil(S / E) * capacity_factor per expert (S = routed sub-tokens)."""
    drop_at_eval: bool = False
    """In capacity mode, also apply the capacity rule in eval (official code: true)."""
    aux_loss_coef: float = 0.01
    """Weight of the GShard/Switch load-balancing loss, summed over MoE layers (paper: 0.01)."""
    z_loss_coef: float = 0.0
    """Weight of the router z-loss (paper: 0, off)."""
    activation_threshold: float = 0.5
    """An expert counts as activated when its load is >= this fraction of the uniform share."""
    dispatch: str = "auto"
    """Expert kernel: auto (bmm on CPU when near balanced, else grouped_mm, else loop), bmm (padded
    batched matmul), grouped_mm or loop (per expert); docs/MODEL.md, "Expert compute"."""

    def __post_init__(self) -> None:
        for name in ("num_experts", "top_k", "expert_d_ff", "heads"):
            check_positive(f"moe.{name}", getattr(self, name))
        check(
            self.top_k <= self.num_experts,
            f"moe.top_k={self.top_k} must be <= moe.num_experts={self.num_experts}",
        )
        router_kind(self.router)  # an unknown router lists the known ones
        check_positive("moe.shared_expert_d_ff", self.shared_expert_d_ff, allow_zero=True)
        check_choice("moe.capacity_mode", self.capacity_mode, CAPACITY_MODES)
        check_positive("moe.capacity_factor", self.capacity_factor)
        check_positive("moe.aux_loss_coef", self.aux_loss_coef, allow_zero=True)
        check_positive("moe.z_loss_coef", self.z_loss_coef, allow_zero=True)
        check(
            0.0 < self.activation_threshold <= 1.0,
            f"moe.activation_threshold={self.activation_threshold} must be in (0, 1]",
        )
        check_choice("moe.dispatch", self.dispatch, DISPATCH_IMPLS)

    @property
    def batch_dependent_at_eval(self) -> bool:
        """Whether tokens of one batch compete for expert slots in eval (capacity routing applied at
        eval): a sequence's scores then depend on the others in its batch, so evaluation runs each alone."""
        return self.capacity_mode == "capacity" and self.drop_at_eval


@dataclass(frozen=True, kw_only=True)
class QuantConfig:
    """BitNet quantization, applied by a post-build converter (mhmoe.model.quantization)."""

    weight_bits: float = FULL_PRECISION_BITS
    """Weight bits: 16 (full precision: quantization off), 8, 4, 2 or 1.58 (ternary absmean, BitNet b1.58)."""
    activation_bits: int = 8
    """Activation bits for quantized linears (absmax per token)."""
    quantize_attention: bool = True
    """Quantize q/k/v/out projections (official: yes)."""
    quantize_ffn: bool = True
    """Quantize dense FFN, expert and shared-expert linears (official: yes)."""
    quantize_router: bool = False
    """Quantize the router (official: no)."""
    quantize_head_merge: bool = False
    """Quantize the MH-MoE head and merge layers (official: no)."""
    quantize_embeddings: bool = False
    """Quantize the token embedding / tied LM head (official: no)."""
    subln: bool = False
    """SubLN: RMSNorm before attention out-proj and before each FFN down-proj (unspecified in v2)."""

    def __post_init__(self) -> None:
        check_choice("quant.weight_bits", self.weight_bits, WEIGHT_BITS)
        check_choice("quant.activation_bits", self.activation_bits, (8, 16))

    @property
    def enabled(self) -> bool:
        """Whether the BitNet converter runs (any width below full precision)."""
        return is_quantized(self.weight_bits)


@overload
def is_quantized(weight_bits: float) -> bool: ...
@overload
def is_quantized(weight_bits: pd.Series) -> pd.Series: ...
def is_quantized(weight_bits: float | pd.Series) -> bool | pd.Series:
    """Whether a ``quant.weight_bits`` value means quantized weights (elementwise on a frame column)."""
    return weight_bits < FULL_PRECISION_BITS


def check_architecture(model: ModelConfig, moe: MoEConfig) -> None:
    """Rules that span components; raises ConfigError naming the fields. Runs once per
    :class:`Architecture` (and so once per resolved RunConfig)."""
    if not model.variant.routes:
        return
    if not model.variant.multi_head:
        multi = [key for key, v in VARIANTS.items() if v.multi_head]
        check(
            moe.heads == 1,
            f"moe.heads={moe.heads} needs model.ffn={multi[0]!r} (model.ffn={model.ffn!r} routes whole tokens)"
            if len(multi) == 1 else f"moe.heads={moe.heads} needs model.ffn in {multi} "
            f"(model.ffn={model.ffn!r} routes whole tokens)",
        )
    check(
        model.d_model % moe.heads == 0,
        f"moe.heads={moe.heads} does not divide model.d_model={model.d_model}",
    )
    check(model.num_moe_layers > 0, f"model.moe_every={model.moe_every} leaves no MoE block in {model.n_layers} layers")


def variant_label(model: ModelConfig, moe: MoEConfig) -> str:
    """Short human-readable name used in tables and MLflow tags (e.g. ``mhmoe-h3``): the variant's
    label rule (:meth:`mhmoe.config.variants.Variant.label`)."""
    return model.variant.label(heads=moe.heads, head_proj=moe.head_proj, merge_proj=moe.merge_proj,
                               shared=moe.shared_expert_d_ff > 0)


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """Backbone + MoE layer + quantization, validated together once (:func:`check_architecture`).

    The only input of the model builder, the budget counts and the matcher: a resolved config is
    checked when it is resolved, not again by every consumer. What the routed layer holds is
    :attr:`layer`, the variant's :class:`~mhmoe.config.variants.LayerShape` of this architecture.
    """

    model: ModelConfig
    """The backbone and ``model.ffn``."""
    moe: MoEConfig = field(default_factory=MoEConfig)
    """The routed layer (ignored by non-routing variants)."""
    quant: QuantConfig = field(default_factory=QuantConfig)
    """BitNet quantization (off at 16 bits)."""

    def __post_init__(self) -> None:
        check_architecture(self.model, self.moe)

    @property
    def variant(self) -> Variant:
        return self.model.variant

    @property
    def routes(self) -> bool:
        return self.model.variant.routes

    @property
    def layer(self) -> LayerShape | None:
        """The routed layer's shape (the variant's ``shape`` hook); None when the variant does not route."""
        return self.variant.shape(self) if self.routes else None

    @property
    def head_proj(self) -> bool:
        """Whether the routed layer has a head projection (False without a routed layer)."""
        return self.layer is not None and self.layer.head_proj

    @property
    def merge_proj(self) -> bool:
        return self.layer is not None and self.layer.merge_proj

    @property
    def label(self) -> str:
        """``mhmoe-h3``: :func:`variant_label` (without the ``+w<bits>`` of RunConfig.variant)."""
        return variant_label(self.model, self.moe)


__all__ = [
    "Architecture",
    "ConfigError",
    "FULL_PRECISION_BITS",
    "ModelConfig",
    "MoEConfig",
    "QuantConfig",
    "ROUTER_NAMES",
    "check_architecture",
    "is_quantized",
    "variant_label",
    "FFN_VARIANTS",
    "WEIGHT_BITS",
]
