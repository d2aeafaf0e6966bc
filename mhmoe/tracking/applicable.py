"""Which config params describe a run: a dense model has no routed layer, so no ``moe.*`` param.

Logged params are what MLflow filters and compare views show; a dense run listed "with 8 experts"
would be wrong there. Used for the MLflow params of a run and the Optuna params of a trial.
"""

from __future__ import annotations

from typing import Any

from mhmoe.config.variants import routes

ROUTED_ONLY_PREFIXES = ("moe.",)


def applicable_params(flat: dict[str, Any], ffn: str) -> dict[str, Any]:
    """``flat`` (dotted keys) without the keys that say nothing about a model with this ``ffn``."""
    if routes(ffn):
        return dict(flat)
    return {k: v for k, v in flat.items() if not k.startswith(ROUTED_ONLY_PREFIXES)}


__all__ = ["ROUTED_ONLY_PREFIXES", "applicable_params"]
