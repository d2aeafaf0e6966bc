"""MH-MoE h=3 and SMoE layers vs a FLOP-matched dense SwiGLU, an HF-style mask loop and the floor.

Run: .venv/bin/python benchmarks/moe_layer.py [--tokens 2048] [--reps 15] [--runs 5]

Every contender runs side by side in one process, interleaved, and the script prints time
ratios (absolute times on shared CPUs are not stable); with --runs N it repeats the whole
measurement N times and prints each ratio's range over the runs. The floor is the MH-MoE layer's
expert work as perfectly balanced batched matmuls (no routing, no sort, no gathers) plus its head
and merge projections: what an h=3 layer cannot go below on this CPU. Sizes: cpu-small (d=192) and d=264 (the
nearest width to 256 that h=3 divides with fp32-aligned sub-tokens; 256 is not divisible by 3).
The MH-MoE config comes from the FLOP-matching solver's rule (docs/MATCHING.md): SMoE E=8, top-1,
d_ff=4d/1.5 baseline -> h=3, top-3, d_ff=(3*f_s - 2d)/9, E rounded to a multiple of 8.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from mhmoe.config.architecture import Architecture, ModelConfig, MoEConfig
from mhmoe.model.layers import SwiGLU, silu_gate
from mhmoe.model.moe import MoELayer


def moe_layer(d: int, ffn: str, moe: MoEConfig) -> MoELayer:
    """The routed layer of ``model.ffn=ffn`` at width d with these MoE settings."""
    return MoELayer(Architecture(model=ModelConfig(ffn=ffn, d_model=d, n_heads=1), moe=moe))


def matched_h3(d: int, f_s: int, e_s: int = 8) -> MoEConfig:
    f_mh = (3 * f_s - 2 * d) // 9
    exact_e = (3 * d * f_s * e_s - 2 * d * d) / (3 * (d // 3) * f_mh)
    return MoEConfig(num_experts=int(8 * round(exact_e / 8)), top_k=3, expert_d_ff=f_mh, heads=3)


class HFMaskLoopMoE(nn.Module):
    """The common Hugging Face pattern: one_hot expert mask, loop over experts, index_add_."""

    def __init__(self, d_model: int, cfg: MoEConfig) -> None:
        super().__init__()
        self.cfg, d_sub = cfg, d_model // cfg.heads
        self.head = nn.Linear(d_model, d_model)
        self.merge = nn.Linear(d_model, d_model)
        self.gate = nn.Linear(d_sub, cfg.num_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(d_sub, cfg.expert_d_ff) for _ in range(cfg.num_experts))

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        B, T, D = x_BTD.shape
        h = self.cfg.heads
        x = self.head(x_BTD.reshape(-1, D)).reshape(-1, D // h)
        probs = self.gate(x).float().softmax(-1)
        weights, selected = probs.topk(self.cfg.top_k, dim=-1)
        weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(x)
        expert_mask = F.one_hot(selected, self.cfg.num_experts).permute(2, 1, 0)  # (E, K, S)
        for e, expert in enumerate(self.experts):
            k_idx, rows = torch.where(expert_mask[e])
            if rows.numel() == 0:
                continue
            out.index_add_(0, rows, expert(x[rows]) * weights[rows, k_idx, None])
        return self.merge(out.reshape(B * T, D)).view(B, T, D)


class BalancedFloor(nn.Module):
    """The MH-MoE layer's multiplications with perfect balance and no routing: head, every
    sub-token k times through (E, A/E, d/h) batched SwiGLU matmuls, sum over k, merge."""

    def __init__(self, d_model: int, cfg: MoEConfig) -> None:
        super().__init__()
        self.cfg, d_sub = cfg, d_model // cfg.heads
        self.head = nn.Linear(d_model, d_model)
        self.merge = nn.Linear(d_model, d_model)
        E, F_ = cfg.num_experts, cfg.expert_d_ff
        self.w1 = nn.Parameter(torch.randn(E, d_sub, F_) / math.sqrt(d_sub))
        self.w3 = nn.Parameter(torch.randn(E, d_sub, F_) / math.sqrt(d_sub))
        self.w2 = nn.Parameter(torch.randn(E, F_, d_sub) / math.sqrt(F_))

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        B, T, D = x_BTD.shape
        E, K = self.cfg.num_experts, self.cfg.top_k
        x_Sd = self.head(x_BTD.reshape(-1, D)).reshape(-1, D // self.cfg.heads)
        S, d = x_Sd.shape
        rows = x_Sd.repeat(K, 1).view(E, S * K // E, d)  # needs S*K divisible by E (true for the sizes here)
        y = torch.bmm(silu_gate(torch.bmm(rows, self.w1), torch.bmm(rows, self.w3)), self.w2)
        return self.merge(y.reshape(K, S, d).sum(0).reshape(B * T, D)).view(B, T, D)


def fwd_bwd(module: nn.Module, x: torch.Tensor) -> None:
    out = module(x)
    out = out[0] if isinstance(out, tuple) else out
    out.backward(torch.ones_like(out))
    module.zero_grad(set_to_none=True)


def bench(modules: dict[str, nn.Module], x: torch.Tensor, reps: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in modules}
    for module in modules.values():  # warm up
        fwd_bwd(module, x)
    for _ in range(reps):
        for name, module in modules.items():  # interleaved so host noise hits all alike
            start = time.perf_counter()
            fwd_bwd(module, x)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def one_size(d: int, f_s: int, tokens: int, reps: int, verbose: bool) -> dict[str, float]:
    """Time ratios of one run at one size (and the per-module times when verbose)."""
    cfg = matched_h3(d, f_s)
    smoe = MoEConfig(num_experts=8, top_k=1, expert_d_ff=f_s, heads=1)
    x = torch.randn(1, tokens, d, requires_grad=True)
    modules = {
        "dense": SwiGLU(d, f_s),
        "mhmoe": moe_layer(d, "mhmoe", cfg),
        "mhmoe_gmm": moe_layer(d, "mhmoe", replace(cfg, dispatch="grouped_mm")),
        "mhmoe_loop": moe_layer(d, "mhmoe", replace(cfg, dispatch="loop")),
        "hf_mask_loop": HFMaskLoopMoE(d, cfg),
        "floor": BalancedFloor(d, cfg),
        "smoe": moe_layer(d, "smoe", smoe),
    }
    t = bench(modules, x, reps)
    if verbose:
        mults = 3 * d * f_s
        print(f"\nd={d}: dense d_ff={f_s} vs MH-MoE h=3 E={cfg.num_experts} k=3 d_ff={cfg.expert_d_ff} "
              f"(mults/token {mults:,} vs {3 * d * cfg.expert_d_ff * 3 + 2 * d * d:,}), SMoE E=8 k=1 d_ff={f_s}")
        for name, sec in t.items():
            print(f"  {name:<13} {sec * 1e3:8.2f} ms")
    return {
        "MH-MoE / dense": t["mhmoe"] / t["dense"],
        "MH-MoE / floor": t["mhmoe"] / t["floor"],
        "floor / dense": t["floor"] / t["dense"],
        "HF mask loop / MH-MoE": t["hf_mask_loop"] / t["mhmoe"],
        "SMoE / dense": t["smoe"] / t["dense"],
        "grouped_mm / auto": t["mhmoe_gmm"] / t["mhmoe"],
        "per-expert loop / auto": t["mhmoe_loop"] / t["mhmoe"],
    }


TARGETS = {"MH-MoE / dense": "<= 2.0", "HF mask loop / MH-MoE": ">= 2.5", "SMoE / dense": "<= 1.4"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole measurement; print ranges")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, fp32, T={args.tokens} tokens, "
          f"fwd+bwd median of {args.reps}, {args.runs} run(s)")
    sizes = ((192, 512), (264, 704))
    runs: dict[int, list[dict[str, float]]] = {d: [] for d, _ in sizes}
    for run in range(args.runs):
        for d, f_s in sizes:
            ratios = one_size(d, f_s, args.tokens, args.reps, verbose=run == 0)
            runs[d].append(ratios)
            print(f"run {run + 1} d={d}: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()), flush=True)
    for d, _ in sizes:
        print(f"\nd={d}, over {args.runs} run(s) (min - max):")
        for key in runs[d][0]:
            values = [r[key] for r in runs[d]]
            target = f"  (target {TARGETS[key]})" if key in TARGETS else ""
            print(f"  {key:<24} {min(values):.2f} - {max(values):.2f}x{target}")


if __name__ == "__main__":
    main()
