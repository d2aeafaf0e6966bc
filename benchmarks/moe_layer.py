"""MH-MoE h=3 layer vs a FLOP-matched dense SwiGLU and an HF-style mask loop, fwd+bwd, fp32.

Run: .venv/bin/python benchmarks/moe_layer.py [--tokens 2048] [--reps 15]

All three run side by side in one process, interleaved, and the script prints time ratios
(absolute times on shared CPUs are not stable). Sizes: cpu-small (d=192) and d=264 (the
nearest width to 256 that h=3 divides with fp32-aligned sub-tokens; 256 is not divisible by 3).
The MH-MoE config comes from the FLOP-matching solver's rule (docs/MATCHING.md): SMoE E=8, top-1,
d_ff=4d/1.5 baseline -> h=3, top-3, d_ff=(3*f_s - 2d)/9, E rounded to a multiple of 8.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from mhmoe.config import MoEConfig
from mhmoe.model.layers import SwiGLU
from mhmoe.model.moe import MoELayer


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, fp32, T={args.tokens} tokens, fwd+bwd median")
    for d, f_s in ((192, 512), (264, 704)):
        cfg = matched_h3(d, f_s)
        x = torch.randn(1, args.tokens, d, requires_grad=True)
        modules = {
            "dense": SwiGLU(d, f_s),
            "mhmoe": MoELayer(d, cfg, "mhmoe"),
            "mhmoe_loop": MoELayer(d, MoEConfig(**{**cfg.__dict__, "dispatch": "loop"}), "mhmoe"),
            "hf_mask_loop": HFMaskLoopMoE(d, cfg),
        }
        t = bench(modules, x, args.reps)
        mults = 3 * d * f_s
        print(f"\nd={d}: dense d_ff={f_s} vs MH-MoE h=3 E={cfg.num_experts} k=3 d_ff={cfg.expert_d_ff} "
              f"(mults/token {mults:,} vs {3 * d * cfg.expert_d_ff * 3 + 2 * d * d:,})")
        for name, sec in t.items():
            print(f"  {name:<13} {sec * 1e3:8.2f} ms")
        print(f"  MH-MoE / dense          = {t['mhmoe'] / t['dense']:.2f}x  (target <= 1.3)")
        print(f"  HF mask loop / MH-MoE   = {t['hf_mask_loop'] / t['mhmoe']:.2f}x  (target >= 2.5)")
        print(f"  per-expert loop / grouped_mm = {t['mhmoe_loop'] / t['mhmoe']:.2f}x")
    _ = math


if __name__ == "__main__":
    main()
