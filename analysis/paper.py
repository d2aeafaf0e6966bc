"""The MH-MoE v2 paper's published validation perplexities (arXiv 2411.16205, Tables 1-5) as data.

One tidy row per number: table, model, steps, column, ppl, plus the attributes our runs are
matched on (head_proj, merge_proj, shared, weight_bits). Table 4/5 do not state the step; their
"without" rows equal Table 1 at 50k, so 50,000 is used (inferred from the tables).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from mhmoe.config.architecture import FULL_PRECISION_BITS

COLUMNS = ("RedPajama", "Wiki", "C4")
MODELS = ("Dense", "SMoE", "Fine-grained SMoE", "MH-MoE (head=2)", "MH-MoE (head=3)")
TABLE_TITLES = {
    "T1": "Table 1: validation perplexity, no shared expert",
    "T2": "Table 2: with a shared expert (d_ff 2048)",
    "T3": "Table 3: BitNet b1.58",
    "T4": "Table 4: with and without head & merge layers",
    "T5": "Table 5: head vs merge layer, MH-MoE h=2",
}
BITNET_BITS = 1.58

# (model, steps, RedPajama, Wiki, C4), from v2 Tables 1-3.
_StepsRow = tuple[str, int, float, float, float]
# (model, head_proj, merge_proj, RedPajama, Wiki, C4), v2 Tables 4-5.
_ProjRow = tuple[str, bool, bool, float, float, float]

_T1: list[_StepsRow] = [
    ("Dense", 50_000, 13.01, 12.95, 17.41), ("SMoE", 50_000, 11.87, 10.51, 15.63),
    ("Fine-grained SMoE", 50_000, 11.68, 10.18, 15.21), ("MH-MoE (head=2)", 50_000, 11.60, 10.11, 15.11),
    ("MH-MoE (head=3)", 50_000, 11.45, 10.00, 14.90),
    ("Dense", 100_000, 12.13, 11.58, 16.21), ("SMoE", 100_000, 10.90, 9.68, 14.35),
    ("Fine-grained SMoE", 100_000, 10.74, 9.38, 13.97), ("MH-MoE (head=2)", 100_000, 10.70, 9.26, 13.80),
    ("MH-MoE (head=3)", 100_000, 10.51, 9.18, 13.63),
]
_T2: list[_StepsRow] = [
    ("SMoE", 50_000, 11.76, 10.33, 15.19), ("Fine-grained SMoE", 50_000, 11.51, 10.06, 15.01),
    ("MH-MoE (head=2)", 50_000, 11.48, 9.91, 14.87), ("MH-MoE (head=3)", 50_000, 11.26, 9.74, 14.82),
    ("SMoE", 100_000, 10.66, 9.44, 14.30), ("Fine-grained SMoE", 100_000, 10.41, 9.15, 13.78),
    ("MH-MoE (head=2)", 100_000, 10.36, 8.79, 13.66), ("MH-MoE (head=3)", 100_000, 10.28, 8.72, 13.49),
]
_T3: list[_StepsRow] = [
    ("Dense", 50_000, 32.17, 27.56, 35.85), ("SMoE", 50_000, 29.18, 24.70, 32.34),
    ("Fine-grained SMoE", 50_000, 29.04, 24.51, 32.03), ("MH-MoE (head=2)", 50_000, 28.84, 24.27, 31.86),
    ("MH-MoE (head=3)", 50_000, 28.77, 24.13, 31.81),
    ("Dense", 100_000, 30.04, 24.75, 33.55), ("SMoE", 100_000, 26.78, 21.54, 29.73),
    ("Fine-grained SMoE", 100_000, 26.68, 21.42, 29.50), ("MH-MoE (head=2)", 100_000, 26.59, 21.11, 29.27),
    ("MH-MoE (head=3)", 100_000, 26.47, 21.06, 29.14),
]
_T4: list[_ProjRow] = [
    ("SMoE", False, False, 11.87, 10.51, 15.63), ("SMoE", True, True, 11.84, 10.48, 15.61),
    ("Fine-grained SMoE", False, False, 11.68, 10.18, 15.21), ("Fine-grained SMoE", True, True, 11.67, 10.18, 15.19),
    ("MH-MoE (head=2)", False, False, 11.71, 10.16, 15.23), ("MH-MoE (head=2)", True, True, 11.46, 9.98, 14.89),
]
_T5: list[_ProjRow] = [
    ("MH-MoE (head=2)", False, False, 11.97, 10.40, 15.52), ("MH-MoE (head=2)", True, False, 11.74, 10.18, 15.17),
    ("MH-MoE (head=2)", False, True, 11.84, 10.27, 15.36), ("MH-MoE (head=2)", True, True, 11.60, 10.11, 15.11),
]
_T45_STEPS = 50_000


def default_proj(model: str) -> bool:
    """Head/merge layers are part of MH-MoE and absent from the others (the v2 default)."""
    return model.startswith("MH-MoE")


def _rows(table: str, model: str, steps: int, values: Sequence[float], head: bool, merge: bool, shared: bool,
          bits: float) -> list[dict[str, object]]:
    return [
        {"table": table, "model": model, "steps": steps, "column": c, "ppl": v,
         "head_proj": head, "merge_proj": merge, "shared": shared, "weight_bits": bits}
        for c, v in zip(COLUMNS, values)
    ]


def paper_frame() -> pd.DataFrame:
    """Every published number of Tables 1-5 as one tidy frame."""
    rows: list[dict[str, object]] = []
    for table, by_steps, shared, bits in (("T1", _T1, False, FULL_PRECISION_BITS),
                                          ("T2", _T2, True, FULL_PRECISION_BITS), ("T3", _T3, False, BITNET_BITS)):
        for model, steps, *values in by_steps:
            d = default_proj(model)
            rows += _rows(table, model, steps, values, d, d, shared, bits)
    for table, by_proj in (("T4", _T4), ("T5", _T5)):
        for model, head, merge, *values in by_proj:
            rows += _rows(table, model, _T45_STEPS, values, head, merge, False, FULL_PRECISION_BITS)
    return pd.DataFrame(rows)


def row_name(table: str, model: str, head: bool, merge: bool) -> str:
    """How a paper row is named in our tables (Tables 4/5 name the head/merge setting)."""
    if table == "T4":
        return f"{model} {'w/' if head else 'w/o'} head & merge"
    if table == "T5":
        setting = {(True, True): "head + merge", (True, False): "head only",
                   (False, True): "merge only", (False, False): "neither"}[(head, merge)]
        return f"{model}, {setting}"
    return model
