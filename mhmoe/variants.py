"""Every FFN variant and every router, each described once (docs/MODEL.md, "Adding a variant or router").

A :class:`Variant` is what ``model.ffn`` names: whether it routes, how it splits tokens, its
head/merge defaults, how :mod:`mhmoe.matching` sizes it against the SMoE baseline, its label
(``mhmoe-h2``: run names, MLflow tags, budget rows), its paper name and place in the paper's row
order (tables and figures), and the builder of its FFN module. A :class:`RouterKind` is what
``moe.router`` names. Configs, the model, the budget, the matcher, MLflow naming and analysis/ all
read these tables, so a new variant or router is its module plus one entry here.

No torch here: analysis/ imports this module for names and order. Builders and router classes are
named by import path (``package.module:attribute``) and imported by the model package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mhmoe.configbase import check_choice

MATCH_RULES = ("whole", "segment", "heads")
"""How :func:`mhmoe.matching.match_variant` sizes a routed variant against the SMoE baseline:
``whole`` whole tokens, k = k_s, E = E_s; ``segment`` fine-grained segmentation by m, k = m k_s,
E = m E_s; ``heads`` h sub-tokens, k = h k_s, E solved for parameter parity."""


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
    """``module:function`` building a block's FFN from (ModelConfig, MoEConfig, is_moe_block)."""
    multi_head: bool = False
    """Tokens are split into ``moe.heads`` sub-tokens; label and paper name carry the head count."""
    projections: bool = False
    """Head and merge layers on when ``moe.head_proj`` / ``moe.merge_proj`` are None."""
    match: str | None = None
    """Matching rule (:data:`MATCH_RULES`); None: not sized against the SMoE baseline."""
    rows: tuple[Mapping[str, Any], ...] = ({},)
    """Rows of ``mhmoe budget`` / ``mhmoe smoke`` (and of the paper's Table 1 for the paper's variants),
    as :func:`mhmoe.matching.match_variant` keywords: MH-MoE has one per head count."""
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
    )
}
"""Every FFN variant, in the paper's row order (Dense, SMoE, Fine-grained SMoE, MH-MoE)."""

FFN_VARIANTS = tuple(VARIANTS)
BASELINE = "smoe"
"""The whole-token variant every matched variant is sized against (:mod:`mhmoe.matching`) and that
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
    "routes",
    "variant",
    "variant_label",
]
