"""Every FFN variant and every router, each described once (docs/MODEL.md, "Adding a variant or router").

A :class:`Variant` is what ``model.ffn`` names: whether it routes, how it splits tokens, its
head/merge defaults, how :mod:`mhmoe.sizing.matching` sizes it against the SMoE baseline, its label
(``mhmoe-h2``: run names, MLflow tags, budget rows), its paper name and place in the paper's row
order (tables and figures), the builder of its FFN module and the shape of its routed layer
(:class:`LayerShape`, what the builder, the budget and the matcher all read). A :class:`RouterKind` is what
``moe.router`` names. Configs, the model, the budget, the matcher, MLflow naming and analysis/ all
read these tables, so a new variant or router is its module plus one entry here.

No torch here: analysis/ imports this module for names and order. Builders and router classes are
named by import path (``package.module:attribute``) and imported by the model package.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mhmoe.config.base import check_choice

MATCH_RULES = ("whole", "segment", "heads")
"""How :func:`mhmoe.sizing.matching.match_variant` sizes a routed variant against the SMoE baseline:
``whole`` whole tokens, k = k_s, E = E_s; ``segment`` fine-grained segmentation by m, k = m k_s,
E = m E_s; ``heads`` h sub-tokens, k = h k_s, E solved for parameter parity."""


@dataclass(frozen=True, kw_only=True)
class LayerShape:
    """The structure of one routed layer: what its builder allocates, :mod:`mhmoe.sizing.budget` counts and
    :mod:`mhmoe.sizing.matching` solves for, so the three agree by construction.

    Each token is split into ``heads`` sub-tokens of width ``d_model / heads``; each sub-token runs
    ``top_k`` bias-free SwiGLU experts (d/h -> F -> d/h) out of ``num_experts`` in its pool. ``pools``
    is 1 when every head shares the experts (and the router), ``heads`` when each head has its own.
    """

    d_model: int
    heads: int
    num_experts: int
    """Experts per pool."""
    top_k: int
    expert_d_ff: int
    head_proj: bool
    merge_proj: bool
    pools: int = 1

    @property
    def d_sub(self) -> int:
        """Width of a sub-token: the router's and each expert's input."""
        return self.d_model // self.heads

    @property
    def projections(self) -> int:
        """Head and merge layers (d x d with bias each): 0, 1 or 2."""
        return int(self.head_proj) + int(self.merge_proj)

    @property
    def expert_weights(self) -> int:
        """Weights of one expert (w1, w3 up; w2 down)."""
        return 3 * self.d_sub * self.expert_d_ff

    @property
    def expert_params(self) -> int:
        """Weights of every expert of every pool."""
        return self.pools * self.num_experts * self.expert_weights

    @property
    def expert_mults(self) -> int:
        """Expert multiplications per token, also the expert weights one token uses with multiplicity:
        h sub-tokens x k experts x 3 (d/h) F = 3 d F k."""
        return self.heads * self.top_k * self.expert_weights

    @property
    def matched_mults(self) -> int:
        """The matched budget of the layer (:mod:`mhmoe.sizing.matching`): expert + head + merge
        multiplications per token (router and shared expert excluded, as in the paper)."""
        return self.expert_mults + self.projections * self.d_model**2

    @property
    def matched_params(self) -> int:
        """The matched parameters of the layer: expert + head + merge weights (router, biases, norms
        and shared expert excluded, as in the paper's parity equation)."""
        return self.expert_params + self.projections * self.d_model**2

    @property
    def expert_hidden(self) -> int:
        """Expert hidden units of every pool (one SubLN weight each)."""
        return self.pools * self.num_experts * self.expert_d_ff

    @property
    def active_expert_hidden(self) -> int:
        """Expert hidden units one token uses, with multiplicity (h k F)."""
        return self.heads * self.top_k * self.expert_d_ff

    @property
    def router_params(self) -> int:
        """Bias-free router weights: one (d/h x E) per pool."""
        return self.pools * self.d_sub * self.num_experts

    @property
    def router_mults(self) -> int:
        """Router multiplications per token: each sub-token scores the E experts of its pool (d E)."""
        return self.heads * self.d_sub * self.num_experts


def routed_shape(arch: Any) -> LayerShape:
    """The shape of a routed layer whose h heads share one pool of ``moe.num_experts`` experts (SMoE,
    fine-grained SMoE, MH-MoE); ``arch`` is a validated :class:`mhmoe.config.architecture.Architecture`."""
    moe, projections = arch.moe, arch.variant.projections
    return LayerShape(
        d_model=arch.model.d_model, heads=moe.heads, num_experts=moe.num_experts, top_k=moe.top_k,
        expert_d_ff=moe.expert_d_ff,
        head_proj=projections if moe.head_proj is None else moe.head_proj,
        merge_proj=projections if moe.merge_proj is None else moe.merge_proj,
    )


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One FFN variant: the value of ``model.ffn`` and everything the harness derives from it."""

    key: str
    """``model.ffn`` value, also the start of the variant label."""
    name: str
    """The paper's family name, used in tables and figures (``Fine-grained SMoE``)."""
    routes: bool
    """Whether the MoE blocks hold a routed layer (False: every block keeps the dense FFN)."""
    builder: str
    """``module:function`` building a block's FFN from (Architecture, is_moe_block)."""
    shape: Callable[[Any], LayerShape] = routed_shape
    """The routed layer's :class:`LayerShape` of a validated Architecture (unused when not routed)."""
    multi_head: bool = False
    """Tokens are split into ``moe.heads`` sub-tokens; label and paper name carry the head count."""
    projections: bool = False
    """Head and merge layers on when ``moe.head_proj`` / ``moe.merge_proj`` are None."""
    match: str | None = None
    """Matching rule (:data:`MATCH_RULES`); None: not sized against the SMoE baseline."""
    rows: tuple[Mapping[str, Any], ...] = ({},)
    """Rows of ``mhmoe budget`` / ``mhmoe smoke`` (and of the paper's Table 1 for the paper's variants),
    as :func:`mhmoe.sizing.matching.match_variant` keywords: MH-MoE has one per head count."""
    in_paper: bool = False
    """The paper ran this variant, at the head counts of its ``rows``."""
    colour: str = "purple"
    """Okabe-Ito colour name of the family in figures (analysis/style.py)."""

    def __post_init__(self) -> None:
        if self.match is not None:
            check_choice(f"variant {self.key!r} match", self.match, MATCH_RULES)

    def label(self, *, heads: int = 1, head_proj: bool | None = None, merge_proj: bool | None = None,
              shared: bool = False) -> str:
        """``mhmoe-h3``, ``smoe+shared``, ``mhmoe-h2+nohead+merge``: the run label (no ``+w<bits>``).

        A head/merge setting is named only when it differs from the variant's default.
        """
        if not self.routes:
            return self.key
        label = f"{self.key}-h{int(heads)}" if self.multi_head else self.key
        head = self.projections if head_proj is None else bool(head_proj)
        merge = self.projections if merge_proj is None else bool(merge_proj)
        if (head, merge) != (self.projections, self.projections):
            label += ("+head" if head else "+nohead") + ("+merge" if merge else "+nomerge")
        if shared:
            label += "+shared"
        return label

    def paper_name(self, heads: int = 1) -> str:
        """The paper's name of the model: ``MH-MoE (head=2)`` (the paper names MH-MoE by its heads)."""
        return f"{self.name} (head={int(heads)})" if self.multi_head else self.name

    def is_paper_model(self, heads: int = 1) -> bool:
        """Whether the paper ran this variant at ``heads`` (MH-MoE: h = 2 and 3 only)."""
        return self.in_paper and any(int(row.get("heads", 1)) == int(heads) for row in self.rows)


VARIANTS: dict[str, Variant] = {
    v.key: v
    for v in (
        Variant(key="dense", name="Dense", routes=False, builder="mhmoe.model.ffn:dense_ffn", in_paper=True,
                colour="black"),
        Variant(key="smoe", name="SMoE", routes=True, builder="mhmoe.model.ffn:routed_ffn", match="whole",
                in_paper=True, colour="orange"),
        Variant(key="fine_grained", name="Fine-grained SMoE", routes=True, builder="mhmoe.model.ffn:routed_ffn",
                match="segment", rows=({"granularity": 2},), in_paper=True, colour="sky"),
        Variant(key="mhmoe", name="MH-MoE", routes=True, builder="mhmoe.model.ffn:routed_ffn", multi_head=True,
                projections=True, match="heads", rows=({"heads": 2}, {"heads": 3}), in_paper=True, colour="green"),
        Variant(key="mhmoe_per_head", name="MH-MoE, experts per head", routes=True,
                builder="mhmoe.model.per_head:per_head_ffn", multi_head=True, projections=True, match="heads",
                rows=({"heads": 2},), colour="blue",
                shape=lambda arch: dataclasses.replace(routed_shape(arch), pools=arch.moe.heads)),
    )
}
"""Every FFN variant: the paper's, in its row order (Dense, SMoE, Fine-grained SMoE, MH-MoE), then
MH-MoE with a router and an expert pool per head (not in the paper)."""

FFN_VARIANTS = tuple(VARIANTS)
BASELINE = "smoe"
"""The whole-token variant every matched variant is sized against (:mod:`mhmoe.sizing.matching`) and that
analysis/ takes differences against (its full-precision, unmodified point)."""


def variant(key: str) -> Variant:
    """The entry of ``model.ffn=key``; an unknown key is a ConfigError listing the variants."""
    check_choice("model.ffn", key, tuple(VARIANTS))
    return VARIANTS[key]


def find_variant(key: Any) -> Variant | None:
    """The entry of ``key``, or None (analysis frames may hold runs without ``model.ffn``)."""
    return VARIANTS.get(key) if isinstance(key, str) else None


def projections_default(key: Any) -> bool:
    """Whether head/merge are on by default for ``key`` (unknown keys: off)."""
    entry = find_variant(key)
    return entry.projections if entry is not None else False


def routes(key: Any) -> bool:
    """Whether ``key`` has routed layers (unknown keys count as routed, as the frame always did)."""
    entry = find_variant(key)
    return entry.routes if entry is not None else True


def multi_head(key: Any) -> bool:
    entry = find_variant(key)
    return entry.multi_head if entry is not None else False


def variant_label(key: str, *, heads: int = 1, head_proj: bool | None = None, merge_proj: bool | None = None,
                  shared: bool = False) -> str:
    """:meth:`Variant.label` by key; an unknown key gets the plain routed rule (key + modifiers)."""
    entry = find_variant(key) or Variant(key=str(key), name=str(key), routes=True, builder="")
    return entry.label(heads=heads, head_proj=head_proj, merge_proj=merge_proj, shared=shared)


def paper_name(key: Any, heads: int = 1) -> str | None:
    """The paper's model name (``MH-MoE (head=2)``), None for an unknown key."""
    entry = find_variant(key)
    return entry.paper_name(heads) if entry is not None else None


def paper_order(key: Any) -> int:
    """Position of the family in the paper's row order; unknown keys sort last."""
    order = list(VARIANTS)
    return order.index(key) if key in VARIANTS else len(order)


def variant_rows() -> dict[str, tuple[Variant, Mapping[str, Any]]]:
    """Every variant's rows in the paper's order (the paper's Table 1 first, as registered):
    ``label -> (variant, match_variant keywords)``."""
    rows: dict[str, tuple[Variant, Mapping[str, Any]]] = {}
    for entry in VARIANTS.values():
        for row in entry.rows:
            rows[entry.label(heads=int(row.get("heads", 1)))] = (entry, row)
    return rows


@dataclass(frozen=True, kw_only=True)
class RouterKind:
    """One router: the value of ``moe.router`` and the module that implements it."""

    key: str
    summary: str
    """One line for help texts and docs."""
    module: str
    """``module:class`` of the ``nn.Module`` (constructed as ``cls(d_in, moe_config)``)."""


ROUTERS: dict[str, RouterKind] = {
    r.key: r
    for r in (
        RouterKind(key="topk", summary="token choice: each (sub-)token picks its top-k experts (official code)",
                   module="mhmoe.model.routing:TopKRouter"),
    )
}
"""Every router ``moe.router`` can name."""

ROUTER_NAMES = tuple(ROUTERS)


def router_kind(key: str) -> RouterKind:
    """The entry of ``moe.router=key``; an unknown key is a ConfigError listing the routers."""
    check_choice("moe.router", key, tuple(ROUTERS))
    return ROUTERS[key]


__all__ = [
    "BASELINE",
    "FFN_VARIANTS",
    "LayerShape",
    "MATCH_RULES",
    "ROUTERS",
    "ROUTER_NAMES",
    "RouterKind",
    "VARIANTS",
    "Variant",
    "find_variant",
    "multi_head",
    "paper_name",
    "paper_order",
    "variant_rows",
    "projections_default",
    "router_kind",
    "routed_shape",
    "routes",
    "variant",
    "variant_label",
]
