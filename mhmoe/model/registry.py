"""The model-side half of :mod:`mhmoe.config.variants`: import the FFN builders and router classes its
entries name by path, so that module stays free of torch (analysis/ reads it for names)."""

from __future__ import annotations

from typing import Any

from mhmoe.config.import_path import resolve
from mhmoe.config.variants import ROUTERS, VARIANTS, router_kind, variant


def ffn_builder(ffn: str) -> Any:
    """The builder ``(Architecture, is_moe_block) -> nn.Module`` of ``model.ffn``."""
    return resolve(variant(ffn).builder)


def router_class(router: str) -> Any:
    """The ``nn.Module`` class of ``moe.router`` (constructed as ``cls(d_in, moe_config)``)."""
    return resolve(router_kind(router).module)


def ffn_registry() -> dict[str, Any]:
    """``model.ffn -> builder`` for every variant."""
    return {key: resolve(entry.builder) for key, entry in VARIANTS.items()}


def router_registry() -> dict[str, Any]:
    """``moe.router -> class`` for every router."""
    return {key: resolve(entry.module) for key, entry in ROUTERS.items()}


__all__ = ["ffn_builder", "ffn_registry", "router_class", "router_registry"]
