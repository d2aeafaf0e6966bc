"""Hand-built runs frames (no MLflow) whose perplexity ordering is known exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.frame import annotate

FAMILY = {"dense": ("dense", 1), "smoe": ("smoe", 1), "fg": ("fine_grained", 1), "mh2": ("mhmoe", 2),
          "mh3": ("mhmoe", 3)}


def runs_frame(ppl: dict[str, float], seeds=(0, 1, 2), noise: float = 0.002, val_set: str = "main",
               jitter_seed: int = 0, status: dict[str, str] | None = None, **extra_params) -> pd.DataFrame:
    """One run per (model key, seed): final ``val/<val_set>/ppl`` = ppl[key] x exp(noise)."""
    rng = np.random.default_rng(jitter_seed)
    rows = []
    for key, value in ppl.items():
        ffn, heads = FAMILY[key.split("+")[0]]
        for seed in seeds:
            rows.append({
                "run_id": f"{key}-{seed}", "status": (status or {}).get(key, "FINISHED"),
                "params/model.ffn": ffn, "params/moe.heads": heads, "params/moe.num_experts": 8,
                "params/quant.weight_bits": 1.58 if key.endswith("+w1.58") else 16.0,
                "params/moe.head_proj": False if key.endswith("+nohm") else None,
                "params/moe.merge_proj": False if key.endswith("+nohm") else None,
                "params/seed": seed, **{f"params/{k}": v for k, v in extra_params.items()},
                f"metrics/val/{val_set}/ppl": value * float(np.exp(rng.normal(0, noise))),
            })
    return annotate(pd.DataFrame(rows))


PAPER_ORDER = {"dense": 20.0, "smoe": 18.0, "fg": 17.7, "mh2": 17.5, "mh3": 17.2}
