"""A small real MLflow store with synthetic sweeps that follow mhmoe's naming contract.

``synth``: 9 grid points (dense, SMoE, fine-grained, MH-MoE h2/h3, an h2 head/merge ablation, an
h2 experts axis point and two BitNet points) x 2-3 seeds, val histories on two sets, routing
metrics, load/divergence artifacts at two steps, a parent sweep run and one FAILED run.
``oneseed``: two points with one seed each, no parent run, no routing metrics or artifacts and no
budget params. ``allfailed``: a single FAILED run.

The true perplexities are fixed per point with small seed noise, so every ordering is known.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

SETS = ("shakespeare", "pydoc")
STEPS = (10, 20, 30, 40)
TOKENS_PER_STEP = 1024
N_LAYERS = 2  # MoE layers
NOISE = 0.002  # seed noise in ln ppl, far below the gaps between points


SYNTH_COMMIT = "0123456789abcdef0123456789abcdef01234567"
"""The commit every synthetic trial run claims it trained at."""


@dataclass(frozen=True)
class Point:
    variant: str
    ffn: str
    ppl: float  # final shakespeare perplexity; pydoc is 1.5x
    heads: int = 1
    experts: int = 8
    top_k: int = 1
    head_proj: str = "None"
    merge_proj: str = "None"
    bits: float = 16.0
    seeds: tuple[int, ...] = (0, 1, 2)
    flops: float = 1e6
    routing: bool = True
    budget: bool = True
    tag_point: bool = True
    extra_tags: dict = field(default_factory=dict)

    @property
    def point_id(self) -> str:
        return f"{self.variant}|E{self.experts}"


SYNTH = [
    Point("dense", "dense", 20.0, flops=0.9e6),
    Point("smoe", "smoe", 18.0),
    Point("fine_grained", "fine_grained", 17.6, experts=16, top_k=2),
    Point("mhmoe-h2", "mhmoe", 17.3, heads=2, experts=16, top_k=2, flops=1.1e6),
    Point("mhmoe-h2", "mhmoe", 17.1, heads=2, experts=32, top_k=2, seeds=(0, 1), flops=1.1e6),
    Point("mhmoe-h3", "mhmoe", 17.0, heads=3, experts=16, top_k=3, flops=1.1e6),
    Point("mhmoe-h2+nohead+nomerge", "mhmoe", 17.8, heads=2, experts=16, top_k=2, head_proj="False",
          merge_proj="False"),
    Point("smoe+w1.58", "smoe", 30.0, bits=1.58, seeds=(0, 1)),
    Point("mhmoe-h2+w1.58", "mhmoe", 28.5, heads=2, experts=16, top_k=2, bits=1.58, seeds=(0, 1), flops=1.1e6),
]
ONESEED = [
    Point("smoe", "smoe", 18.0, seeds=(0,), routing=False, budget=False, tag_point=False),
    Point("mhmoe-h2", "mhmoe", 17.3, heads=2, experts=16, top_k=2, seeds=(0,), routing=False, budget=False,
          tag_point=False),
]


def final_ppl(p: Point, seed: int, val_set: str) -> float:
    noise = np.random.default_rng(zlib.crc32(f"{p.point_id}/{seed}".encode())).normal(0, NOISE)
    return p.ppl * (1.5 if val_set == "pydoc" else 1.0) * math.exp(noise)


def _params(p: Point, seed: int) -> list[Param]:
    values = {
        "model.ffn": p.ffn, "moe.heads": p.heads, "moe.num_experts": p.experts, "moe.top_k": p.top_k,
        "moe.expert_d_ff": 128 // p.heads, "moe.head_proj": p.head_proj, "moe.merge_proj": p.merge_proj,
        "moe.shared_expert_d_ff": 0, "quant.weight_bits": p.bits, "seed": seed, "train.batch_size": 4,
        "train.seq_len": 256, "data.val_sets": str(list(SETS)), "optim.betas": "[0.9, 0.95]",
    }
    if p.budget:
        values.update({"budget.train_flops_per_token": p.flops, "budget.total_params": 1_000_000})
    return [Param(k, str(v)) for k, v in values.items()]


def _metrics(p: Point, seed: int, steps: tuple[int, ...]) -> list[Metric]:
    out = []
    for s in steps:
        for v in SETS:
            ppl = final_ppl(p, seed, v) * (1 + 2 * (STEPS[-1] - s) / STEPS[-1])
            out += [Metric(f"val/{v}/ppl", ppl, 0, s), Metric(f"val/{v}/loss", math.log(ppl), 0, s)]
        out.append(Metric("val/tokens", s * TOKENS_PER_STEP, 0, s))
    if p.routing and p.ffn != "dense" and steps == STEPS:
        ratio = 0.5 + 0.1 * p.heads
        out += [Metric("routing/mean/activation_ratio", ratio, 0, STEPS[-1]),
                Metric("routing/mean/load_imbalance", 3.0 / p.heads + 0.01 * seed, 0, STEPS[-1]),
                Metric("routing/layer_1/load_imbalance", 3.0 / p.heads, 0, STEPS[-1])]
    return out


def load_counts(p: Point, seed: int) -> np.ndarray:
    """Last-step load: expert e gets (e + 1) shares, so expert 0 is the least used."""
    counts = np.tile(np.arange(1, p.experts + 1, dtype="float64"), (N_LAYERS, 1))
    return counts * (1 + seed)


def divergence_hist(p: Point) -> np.ndarray:
    """Tokens whose sub-tokens reached j+1 distinct experts: all mass on j = heads - 1."""
    hist = np.zeros((N_LAYERS, p.heads))
    hist[:, -1] = 100.0
    return hist


def _artifacts(client: MlflowClient, run_id: str, p: Point, seed: int, tmp: Path) -> None:
    if p.ffn == "dense" or not p.routing:
        return
    for step, load in ((STEPS[1], np.zeros((N_LAYERS, p.experts))), (STEPS[-1], load_counts(p, seed))):
        folder = tmp / f"{run_id}_{step}"
        folder.mkdir()
        np.save(folder / f"load_step{step:07d}.npy", load)
        np.save(folder / f"divergence_step{step:07d}.npy", divergence_hist(p))
        client.log_artifacts(run_id, str(folder), "routing")


def build_sweep(client: MlflowClient, experiment_id: str, sweep: str, pts: list[Point], tmp: Path,
                *, parent: bool, failed: Point | None = None) -> dict[str, list[str]]:
    """Create the sweep's runs; returns ``{"parent": [...], "trial": [...], "failed": [...]}``."""
    ids: dict[str, list[str]] = {"parent": [], "trial": [], "failed": []}
    tags = {"mhmoe.sweep": sweep}
    if parent:
        run = client.create_run(experiment_id, tags={**tags, "mhmoe.role": "sweep"}, run_name=sweep)
        ids["parent"].append(run.info.run_id)
    for p in pts:
        for seed in p.seeds:
            ids["trial"].append(_trial(client, experiment_id, sweep, p, seed, tmp, ids["parent"], STEPS))
    if failed is not None:
        ids["failed"].append(_trial(client, experiment_id, sweep, failed, 3, tmp, ids["parent"], STEPS[:2],
                                    status="FAILED"))
    for run_id in ids["parent"]:
        client.set_terminated(run_id)
    return ids


def _trial(client, experiment_id, sweep, p: Point, seed: int, tmp: Path, parent: list[str], steps,
           status: str = "FINISHED") -> str:
    tags = {"mhmoe.sweep": sweep, "mhmoe.role": "trial", "mhmoe.variant": p.variant, "mhmoe.seed": str(seed),
            "mhmoe.git_commit": SYNTH_COMMIT}
    if p.tag_point:
        tags["mhmoe.point"] = p.point_id
    if parent:
        tags["mlflow.parentRunId"] = parent[0]
    run = client.create_run(experiment_id, tags=tags, run_name=f"{p.variant}-s{seed}")
    run_id = run.info.run_id
    client.log_batch(run_id, metrics=_metrics(p, seed, steps), params=_params(p, seed),
                     tags=[RunTag("mhmoe.trial", str(seed))])
    if status == "FINISHED":
        _artifacts(client, run_id, p, seed, tmp)
    client.set_terminated(run_id, status=status)
    return run_id


SPEC = """# synthetic sweep for the analysis tests (the runs are made up, not trained)
name: {name}
tracking_uri: {uri}
base: {{preset: debug}}
budget: {{steps: 40}}
validation: {{sets: [shakespeare, pydoc], metric: val/shakespeare/ppl}}
groups:
  dense: {{model.ffn: dense}}
  smoe: {{model.ffn: smoe}}
  mhmoe-h2: {{model.ffn: mhmoe, moe.heads: 2}}
grid: {{seed: {seeds}}}
"""


def build_store(root: Path) -> dict:
    """Both sweeps in one sqlite store under ``root``; returns the URI, spec paths and run ids."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("analysis-tests", artifact_location=(root / "artifacts").as_uri())
    tmp = root / "staging"
    tmp.mkdir()
    synth = build_sweep(client, exp, "synth", SYNTH, tmp, parent=True, failed=SYNTH[1])
    oneseed = build_sweep(client, exp, "oneseed", ONESEED, tmp, parent=False)
    allfailed = build_sweep(client, exp, "allfailed", [], tmp, parent=False, failed=ONESEED[0])
    specs = root / "specs"
    specs.mkdir()
    (specs / "synth.yaml").write_text(SPEC.format(name="synth", uri=uri, seeds="[0, 1, 2]"))
    (specs / "oneseed-spec.yaml").write_text(SPEC.format(name="oneseed", uri=uri, seeds="[0]"))
    (specs / "allfailed.yaml").write_text(SPEC.format(name="allfailed", uri=uri, seeds="[0]"))
    return {"uri": uri, "synth": synth, "oneseed": oneseed, "allfailed": allfailed, "specs": specs}
