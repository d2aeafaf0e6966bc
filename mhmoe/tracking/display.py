"""The paper's names for models, one rule for MLflow tags (``mhmoe.display_name``) and analysis/.

``MH-MoE (head=2)``, ``SMoE + shared expert``, ``Dense, BitNet b1.58``: the family name, then
what a point adds to it in the paper's words. analysis/ builds its figure and table names from
:func:`model_name` and :func:`modifier_text`; training tags each run with :func:`display_name`.
Family names and head/merge defaults are the variant registry's (:mod:`mhmoe.config.variants`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mhmoe.config.architecture import FULL_PRECISION_BITS, is_quantized
from mhmoe.config.variants import VARIANTS, paper_name, projections_default, routes

FAMILY_NAMES = {key: entry.name for key, entry in VARIANTS.items()}
"""``model.ffn -> the paper's family name``, in the paper's row order."""


def model_name(family: str, heads: int) -> str | None:
    """The paper's name of a model family (``MH-MoE (head=2)``: the paper names MH-MoE by its heads)."""
    return paper_name(family, heads)


def modifier_text(row: Mapping[str, Any], *, bits: bool = True) -> str:
    """What a point adds to its family in the paper's words: head/merge ablations (Tables 4-5),
    a shared expert (Table 2) and, with ``bits``, BitNet weights (Table 3).

    ``row`` has family, head_proj, merge_proj, shared and weight_bits (a frame row or a dict).
    """
    text = ""
    default = projections_default(row["family"])
    if routes(row["family"]) and (row["head_proj"], row["merge_proj"]) != (default, default):
        text += {(True, True): " w/ head & merge", (True, False): ", head only", (False, True): ", merge only",
                 (False, False): " w/o head & merge"}[(bool(row["head_proj"]), bool(row["merge_proj"]))]
    if row["shared"]:
        text += " + shared expert"
    if bits and is_quantized(row["weight_bits"]):
        text += ", BitNet b1.58" if math.isclose(row["weight_bits"], 1.58) else f", {row['weight_bits']:g}-bit"
    return text


def display_name(config) -> str:  # noqa: ANN001 - a RunConfig (not imported: this module stays light)
    """The paper's name for a run's model, e.g. ``MH-MoE (head=2)`` or ``SMoE + shared expert``."""
    arch = config.architecture
    row = {"family": arch.model.ffn, "head_proj": arch.head_proj, "merge_proj": arch.merge_proj,
           "shared": arch.routes and arch.moe.shared_expert_d_ff > 0, "weight_bits": float(arch.quant.weight_bits)}
    return (model_name(arch.model.ffn, arch.moe.heads) or config.variant) + modifier_text(row)


__all__ = ["FAMILY_NAMES", "FULL_PRECISION_BITS", "display_name", "model_name", "modifier_text"]
