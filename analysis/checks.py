"""What the sweep is missing, in words: failed runs, absent metrics, single seeds.

The report prints these notes instead of failing, so a half-finished sweep still gives a report
that says exactly what it could not show.
"""

from __future__ import annotations

import pandas as pd

from analysis.fig_routing import ACTIVATION, IMBALANCE
from analysis.frame import FINISHED, METRIC, finished, ppl_col, val_sets
from analysis.stats import NO_CI
from mhmoe.config.variants import routes

ROUTING_MEAN = (ACTIVATION, IMBALANCE)
"""The routing statistics the report's figure draws (a routed run without them gets a note)."""


def _run(r: pd.Series) -> str:
    seed = "" if pd.isna(r["seed"]) else f", seed {r['seed']:g}"
    return f"`{r['run_id']}` ({r['label']}{seed})"


def missing_notes(runs: pd.DataFrame) -> list[str]:
    """One sentence per gap in the sweep's data."""
    notes = []
    for _, r in runs[runs["status"] != FINISHED].iterrows():
        notes.append(f"run {_run(r)} is {r['status']}: left out of every aggregate, table and figure.")
    done = finished(runs)
    sets = val_sets(runs)
    if not sets:
        notes.append("no run logged a val/<set>/ppl metric: no perplexity tables, curves or ordering check.")
    for _, r in done.iterrows():
        lacking = [s for s in sets if pd.isna(r.get(ppl_col(s)))]
        if lacking:
            notes.append(f"run {_run(r)} finished without " + ", ".join(f"val/{s}/ppl" for s in lacking) + ".")
    moe = done[done["family"].map(routes).astype(bool)]
    no_routing = [_run(r) for _, r in moe.iterrows()
                  if all(pd.isna(r.get(METRIC + m)) for m in ROUTING_MEAN)]
    if no_routing:
        notes.append("no routing/mean/* metrics for " + ", ".join(no_routing) + ".")
    seeds = done.groupby("label")["run_id"].size()
    single = sorted(seeds[seeds == 1].index)
    if single:
        notes.append(f"{NO_CI} for: " + ", ".join(single) + ".")
    return notes
