"""Which of our grid points stands for each row of a paper table.

A point matches a paper row when its model family/heads, head and merge layers, shared expert and
weight bits agree. Expert count and width are not compared (the budget solver picks them), so a
sweep with an experts axis can have several candidates: the one with the most finished seeds is
used and the note names the others.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.paper import COLUMNS, paper_frame, row_name

FINAL_STEPS = 100_000


def paper_rows(table: str, steps: int = FINAL_STEPS) -> pd.DataFrame:
    """Wide paper rows of ``table`` (one per model/setting, columns RedPajama/Wiki/C4).

    Tables 4/5 exist at one step only, so ``steps`` applies to Tables 1-3.
    """
    frame = paper_frame()
    frame = frame[frame["table"] == table]
    if frame["steps"].nunique() > 1:
        frame = frame[frame["steps"] == steps]
    keys = ["table", "model", "steps", "head_proj", "merge_proj", "shared", "weight_bits"]
    wide = frame.pivot_table(index=keys, columns="column", values="ppl", sort=False).reset_index()
    wide.columns.name = None
    wide["row"] = [row_name(t, m, h, g) for t, m, h, g in
                   zip(wide["table"], wide["model"], wide["head_proj"], wide["merge_proj"])]
    return wide[["row", *keys, *COLUMNS]]


def match_points(points: pd.DataFrame, table: str, steps: int = FINAL_STEPS) -> pd.DataFrame:
    """Paper rows of ``table`` with the matching point (None if not run) and a note.

    ``points`` is :func:`analysis.frame.points` output.
    """
    rows = paper_rows(table, steps)
    chosen: list[str | None] = []
    labels: list[str | None] = []
    notes: list[str] = []
    for _, r in rows.iterrows():
        cand = points[(points["paper_model"] == r["model"]) & (points["head_proj"] == r["head_proj"])
                      & (points["merge_proj"] == r["merge_proj"]) & (points["shared"] == r["shared"])
                      & np.isclose(points["weight_bits"].astype(float), r["weight_bits"])]
        if cand.empty:
            chosen.append(None)
            labels.append(None)
            notes.append("not in the sweep")
            continue
        cand = cand.sort_values(["n_runs", "label"], ascending=[False, True])
        chosen.append(cand.iloc[0]["point"])
        labels.append(cand.iloc[0]["label"])
        others = ", ".join(cand["label"].iloc[1:])
        notes.append(f"also matches: {others}" if others else "")
    return rows.assign(point=chosen, label=labels, note=notes)
