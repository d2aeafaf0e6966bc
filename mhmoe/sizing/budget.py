"""Parameter and multiplication counts of a model, from its configs alone (no torch).

The counts follow the model the harness builds (docs/MODEL.md): pre-norm blocks with
RMSNorm weights, bias-free attention and SwiGLU, tied embeddings, and in MoE blocks the optional
head/merge layers (Linear d->d *with* bias), a bias-free router Linear(d/h -> E), E bias-free
SwiGLU experts (d/h -> F -> d/h) and an optional dense SwiGLU shared expert on the full token.
With ``quant.subln`` (and quantization on) the BitNet converter adds an RMSNorm before each
quantized down projection: attention output, dense FFN, each expert, shared expert.

Active parameters count the experts *with multiplicity*: each token is split into h sub-tokens
and each sub-token runs k experts, so a token touches h * k * 3 * (d/h) * F = 3 * d * F * k expert
weights. Equal to the expert multiplications per token, and able to exceed the total when h * k
> E; other parts are all active (the router scores every expert).

Multiplications are forward multiply-adds per token; :func:`train_flops_per_token` turns them into
training FLOPs (x2 for multiply + add, x3 for forward + backward). Symbols: d model width, F expert
hidden width, k top-k, h MH-MoE heads, E experts, V vocabulary.

Every count takes a validated :class:`~mhmoe.config.architecture.Architecture` (a resolved RunConfig's
``architecture``) and reads the routed layer from its :attr:`~mhmoe.config.architecture.Architecture.layer`, the
variant's :class:`~mhmoe.config.variants.LayerShape`: the shape the builder allocates, so a variant with
another structure (its own ``shape`` hook) is counted as it is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from mhmoe.config.architecture import Architecture, QuantConfig
from mhmoe.config.variants import LayerShape


@dataclass(frozen=True, kw_only=True)
class LayerParams:
    """Parameters of one transformer block, split by what the BitNet converter does with them."""

    index: int
    """0-based block index."""
    kind: str
    """``dense`` or ``moe``."""
    norms: int
    """RMSNorm weights outside the routed experts: the two pre-norms and the SubLNs."""
    attention: int
    """wq, wk, wv, wo weights (4 d^2)."""
    dense_ffn: int
    """Dense SwiGLU weights (3 d d_ff); 0 in MoE blocks."""
    head_merge: int
    """MH-MoE head and merge weights (d^2 each, when on)."""
    head_merge_bias: int
    """Their biases (d each)."""
    router: int
    """Router weights (d/h x E per pool of experts)."""
    experts: int
    """Weights of all experts of every pool (E x 3 (d/h) F per pool)."""
    expert_norms: int
    """SubLN weights inside the experts (E x F per pool)."""
    active_experts: int
    """Expert weights one token uses, with multiplicity (3 d F k)."""
    active_expert_norms: int
    """Expert SubLN weights one token uses, with multiplicity (h k F)."""
    shared_expert: int
    """Shared-expert SwiGLU weights (3 d F_s)."""

    @property
    def total(self) -> int:
        return (
            self.norms + self.attention + self.dense_ffn + self.head_merge + self.head_merge_bias
            + self.router + self.experts + self.expert_norms + self.shared_expert
        )

    @property
    def active(self) -> int:
        routed = self.experts + self.expert_norms
        return self.total - routed + self.active_experts + self.active_expert_norms

    def quantized(self, quant: QuantConfig) -> int:
        """Weights the BitNet converter quantizes under ``quant``'s placement (0 when it is off)."""
        if not quant.enabled:
            return 0
        return (
            self.attention * quant.quantize_attention
            + (self.dense_ffn + self.experts + self.shared_expert) * quant.quantize_ffn
            + self.router * quant.quantize_router
            + self.head_merge * quant.quantize_head_merge
        )


@dataclass(frozen=True, kw_only=True)
class ParamCount:
    """Whole-model parameters; ``total`` equals ``sum(p.numel() for p in model.parameters())``."""

    total: int
    active: int
    """Parameters one token uses (experts with multiplicity, see the module docstring)."""
    embedding: int
    """Token embedding V x d (also the output projection when tied)."""
    lm_head: int
    """Untied output projection V x d; 0 when tied."""
    final_norm: int
    quantized: int
    """Parameters stored ternary/low-bit under the QuantConfig; 0 without quantization."""
    per_layer: tuple[LayerParams, ...]

    @property
    def full_precision(self) -> int:
        return self.total - self.quantized


@dataclass(frozen=True, kw_only=True)
class LayerMults:
    """Forward multiplications per token in one transformer block."""

    index: int
    kind: str
    attention_proj: int
    """q, k, v, o projections: 4 d^2."""
    attention_scores: int
    """QK^T and AV: 2 T d, no causal discount."""
    dense_ffn: int
    """3 d d_ff; 0 in MoE blocks."""
    experts: int
    """3 d F k (h sub-tokens x k experts x 3 (d/h) F)."""
    head_merge: int
    """d^2 per projection that is on."""
    router: int
    """d E (= (d/h) E per sub-token x h); not part of the matched budget."""
    shared_expert: int
    """3 d F_s; identical across variants, so not part of the matched budget."""

    @property
    def moe(self) -> int:
        """The matched MoE budget: experts + head + merge (4,718,592 at the paper's sizes)."""
        return self.experts + self.head_merge

    @property
    def total(self) -> int:
        return (
            self.attention_proj + self.attention_scores + self.dense_ffn + self.moe
            + self.router + self.shared_expert
        )


@dataclass(frozen=True, kw_only=True)
class MultCount:
    """Whole-model forward multiplications per token at sequence length ``seq_len``."""

    seq_len: int
    lm_head: int
    """V x d output projection (counted whether or not it is tied)."""
    per_layer: tuple[LayerMults, ...]

    @property
    def attention_scores(self) -> int:
        return sum(layer.attention_scores for layer in self.per_layer)

    @property
    def total(self) -> int:
        return self.lm_head + sum(layer.total for layer in self.per_layer)


def _subln(quant: QuantConfig) -> tuple[bool, bool]:
    """(attention, FFN) SubLN: the BitNet converter adds the norm only to linears it quantizes."""
    on = quant.enabled and quant.subln
    return on and quant.quantize_attention, on and quant.quantize_ffn


def _swiglu(d_in: int, d_ff: int) -> int:
    """Weights of a bias-free SwiGLU d_in -> d_ff -> d_in (w1, w3 up; w2 down)."""
    return 3 * d_in * d_ff


def _layer(arch: Architecture) -> LayerShape:
    assert arch.layer is not None, "only a routed variant has MoE blocks"
    return arch.layer


def _layer_params(arch: Architecture, index: int) -> LayerParams:
    """Parameters of block ``index``."""
    model, (subln_attn, subln) = arch.model, _subln(arch.quant)
    d = model.d_model
    norms = 2 * d + (d if subln_attn else 0)  # attention and FFN pre-norms; SubLN before wo
    common = dict(index=index, attention=4 * d * d)
    if not model.is_moe_block(index):
        return LayerParams(
            **common, kind="dense", norms=norms + (model.d_ff if subln else 0),
            dense_ffn=_swiglu(d, model.d_ff), head_merge=0, head_merge_bias=0, router=0, experts=0,
            expert_norms=0, active_experts=0, active_expert_norms=0, shared_expert=0,
        )
    layer, f_s = _layer(arch), arch.moe.shared_expert_d_ff
    return LayerParams(
        **common, kind="moe",
        norms=norms + (f_s if subln else 0),  # SubLN before the shared expert's w2
        dense_ffn=0,
        head_merge=layer.projections * d * d,
        head_merge_bias=layer.projections * d,
        router=layer.router_params,
        experts=layer.expert_params,
        expert_norms=layer.expert_hidden if subln else 0,
        active_experts=layer.expert_mults,
        active_expert_norms=layer.active_expert_hidden if subln else 0,
        shared_expert=_swiglu(d, f_s),
    )


def count_params(arch: Architecture) -> ParamCount:
    """Total, active and quantized parameters; ``arch.moe`` is ignored when the variant does not route."""
    model, quant = arch.model, arch.quant
    layers = tuple(_layer_params(arch, i) for i in range(model.n_layers))
    embedding = model.vocab_size * model.d_model
    lm_head = 0 if model.tie_embeddings else embedding
    outside = embedding + lm_head + model.d_model  # + final norm
    quantized = sum(layer.quantized(quant) for layer in layers)
    if quant.enabled and quant.quantize_embeddings:
        quantized += embedding + lm_head
    return ParamCount(
        total=outside + sum(layer.total for layer in layers),
        active=outside + sum(layer.active for layer in layers),
        embedding=embedding,
        lm_head=lm_head,
        final_norm=model.d_model,
        quantized=quantized,
        per_layer=layers,
    )


def _layer_mults(arch: Architecture, index: int, *, seq_len: int) -> LayerMults:
    """Forward multiplications per token in block ``index``."""
    model = arch.model
    d = model.d_model
    common = dict(index=index, attention_proj=4 * d * d, attention_scores=2 * seq_len * d)
    if not model.is_moe_block(index):
        return LayerMults(
            **common, kind="dense", dense_ffn=_swiglu(d, model.d_ff), experts=0, head_merge=0,
            router=0, shared_expert=0,
        )
    layer = _layer(arch)
    return LayerMults(
        **common, kind="moe", dense_ffn=0,
        experts=layer.expert_mults,
        head_merge=layer.projections * d * d,
        router=layer.router_mults,
        shared_expert=_swiglu(d, arch.moe.shared_expert_d_ff),
    )


def count_mults(arch: Architecture, *, seq_len: int | None = None) -> MultCount:
    """Forward multiplications per token; ``seq_len`` defaults to ``model.max_seq_len``."""
    model = arch.model
    seq_len = model.max_seq_len if seq_len is None else seq_len
    layers = tuple(_layer_mults(arch, i, seq_len=seq_len) for i in range(model.n_layers))
    return MultCount(seq_len=seq_len, lm_head=model.vocab_size * model.d_model, per_layer=layers)


def train_flops_per_token(arch: Architecture, *, seq_len: int | None = None) -> int:
    """Training FLOPs per token for MFU: 6 x forward multiplications (2 per multiply-add, x3 fwd+bwd)."""
    return 6 * count_mults(arch, seq_len=seq_len).total


def moe_mults_per_token(arch: Architecture) -> int:
    """Matched MoE budget of one MoE layer: expert + head + merge multiplications per token.

    Router and shared expert are excluded (the paper does not match them). For a variant that does
    not route (``dense``) this is the dense FFN that sits where the MoE would.
    """
    layer = arch.layer
    return _swiglu(arch.model.d_model, arch.model.d_ff) if layer is None else layer.matched_mults


def moe_layer_params(arch: Architecture) -> int:
    """Matched parameters of one MoE layer: expert + head + merge weights.

    Router, biases, norms and the shared expert are excluded, as in the paper's parity equation
    (docs/MATCHING.md); this gives its 37,748,736 / 36,569,088 / 38,928,384.
    """
    layer = arch.layer
    return _swiglu(arch.model.d_model, arch.model.d_ff) if layer is None else layer.matched_params


def summary(arch: Architecture, *, seq_len: int | None = None) -> dict[str, int]:
    """Flat ``budget.*`` numbers for MLflow params and tables."""
    params = count_params(arch)
    mults = count_mults(arch, seq_len=seq_len)
    return {
        "budget.total_params": params.total,
        "budget.active_params": params.active,
        "budget.quantized_params": params.quantized,
        "budget.moe_layer_params": moe_layer_params(arch),
        "budget.moe_mults_per_token": moe_mults_per_token(arch),
        "budget.forward_mults_per_token": mults.total,
        "budget.train_flops_per_token": 6 * mults.total,
        "budget.seq_len": mults.seq_len,
    }


__all__ = [
    "LayerMults",
    "LayerParams",
    "MultCount",
    "ParamCount",
    "count_mults",
    "count_params",
    "moe_layer_params",
    "moe_mults_per_token",
    "summary",
    "train_flops_per_token",
]
