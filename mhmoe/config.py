"""Architecture configs: the backbone, the MoE layer and BitNet quantization.

One frozen, keyword-only dataclass per component. Each validates its own fields in
``__post_init__``; :func:`check_architecture` checks the rules that span components
(``moe.heads`` must divide ``model.d_model`` ...). Errors name the dotted field.
"""

from __future__ import annotations

from dataclasses import dataclass

from mhmoe.configbase import ConfigError, check, check_choice, check_positive

FFN_VARIANTS = ("dense", "smoe", "fine_grained", "mhmoe")
WEIGHT_BITS = (16.0, 8.0, 4.0, 2.0, 1.58)
CAPACITY_MODES = ("dropless", "capacity")
DISPATCH_IMPLS = ("auto", "bmm", "grouped_mm", "loop")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Decoder-only backbone (docs/MODEL.md): pre-norm RMSNorm, RoPE, SwiGLU, tied embeddings."""

    ffn: str = "smoe"
    """FFN variant registry key: dense, smoe, fine_grained or mhmoe."""
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
        check_choice("model.ffn", self.ffn, FFN_VARIANTS)
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
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def is_moe_block(self, index: int) -> bool:
        """Whether block ``index`` (0-based) carries the MoE FFN (official placement rule)."""
        return self.ffn != "dense" and (index + 1) % self.moe_every == 0

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
    expert_d_ff: int = 2048
    """Hidden width of each SwiGLU expert."""
    heads: int = 1
    """MH-MoE heads h: each token is split into h sub-tokens of size d_model/h."""
    head_proj: bool | None = None
    """Head layer (Linear d->d with bias) before the split; None = on for mhmoe, off otherwise."""
    merge_proj: bool | None = None
    """Merge layer (Linear d->d with bias) after the concat; None = on for mhmoe, off otherwise."""
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

    def uses_head_proj(self, ffn: str) -> bool:
        return (ffn == "mhmoe") if self.head_proj is None else self.head_proj

    def uses_merge_proj(self, ffn: str) -> bool:
        return (ffn == "mhmoe") if self.merge_proj is None else self.merge_proj


@dataclass(frozen=True, kw_only=True)
class QuantConfig:
    """BitNet quantization, applied by a post-build converter (mhmoe.model.quantization)."""

    weight_bits: float = 16.0
    """Weight bits: 16 (off), 8, 4, 2 or 1.58 (ternary absmean, BitNet b1.58)."""
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
        return self.weight_bits < 16


def check_architecture(model: ModelConfig, moe: MoEConfig) -> None:
    """Rules that span components; raises ConfigError naming the fields."""
    if model.ffn == "dense":
        return
    if model.ffn in ("smoe", "fine_grained"):
        check(
            moe.heads == 1,
            f"moe.heads={moe.heads} needs model.ffn='mhmoe' (model.ffn={model.ffn!r} routes whole tokens)",
        )
    check(
        model.d_model % moe.heads == 0,
        f"moe.heads={moe.heads} does not divide model.d_model={model.d_model}",
    )
    check(model.num_moe_layers > 0, f"model.moe_every={model.moe_every} leaves no MoE block in {model.n_layers} layers")


def variant_label(model: ModelConfig, moe: MoEConfig) -> str:
    """Short human-readable name used in tables and MLflow tags (e.g. ``mhmoe-h3``)."""
    if model.ffn == "dense":
        return "dense"
    label = model.ffn if model.ffn != "mhmoe" else f"mhmoe-h{moe.heads}"
    head, merge = moe.uses_head_proj(model.ffn), moe.uses_merge_proj(model.ffn)
    default = model.ffn == "mhmoe"
    if (head, merge) != (default, default):
        label += "+" + ("head" if head else "nohead") + ("+merge" if merge else "+nomerge")
    if moe.shared_expert_d_ff:
        label += "+shared"
    return label


__all__ = [
    "ConfigError",
    "ModelConfig",
    "MoEConfig",
    "QuantConfig",
    "check_architecture",
    "variant_label",
    "FFN_VARIANTS",
    "WEIGHT_BITS",
]
