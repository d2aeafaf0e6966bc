"""GPU check for paper-size training: tokens/s, MFU, peak memory vs the preflight estimate, and
grouped_mm vs the per-expert loop. On a machine without CUDA it says so and exits 0.

Run: .venv/bin/python benchmarks/gpu_check.py [--steps 24] [--batch-size 64] [--no-compile]

For the paper-v2 SMoE and the FLOP-matched MH-MoE h=3 (the Table 1 rows), each eager and
torch.compiled: a few dozen optimizer steps of the preset's micro-batches (16 x 2048 tokens) on
random tokens, with what Lightning's ``bf16-mixed`` does (fp32 weights and AdamW state, bf16
autocast, loss / accumulate per micro-batch, gradient clipping). ``--batch-size`` (default 64 = 4
micro-batches per step, the preset's 256 takes 4x longer) does not change the per-token work.
MFU = tokens/s x training FLOPs per token / the bf16 dense peak (the nominal one for known devices,
else a measured bf16 matmul). Peak memory is ``torch.cuda.max_memory_allocated`` against
``mhmoe.memory.estimate_memory`` for the same micro-batch.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

NOMINAL_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "B200": 2250.0}
"""Dense bf16 tensor-core peaks (no sparsity) by device-name substring."""


def bf16_peak(device: torch.device) -> tuple[float, str]:
    from mhmoe.training.peak import measure_peak_flops

    name = torch.cuda.get_device_name(device)
    for key, tflops in NOMINAL_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12, f"nominal {tflops:g} TFLOP/s ({name})"
    measured = measure_peak_flops(device, torch.bfloat16)
    return measured, f"measured bf16 matmul {measured / 1e12:.0f} TFLOP/s ({name})"


def configs(batch_size: int) -> dict:
    from mhmoe.matching import paper_variants
    from mhmoe.run_config import resolve_run_config

    out = {}
    for name in ("smoe", "mhmoe-h3"):
        nested = paper_variants("paper-v2")[name]
        flat = {f"{section}.{k}": v for section, values in nested.items() for k, v in values.items()}
        out[name] = resolve_run_config("paper-v2", None, {**flat, "train.batch_size": batch_size,
                                                          "train.precision": "bf16-mixed"})
    return out


def train_steps(cfg, steps: int, compile_model: bool, device: torch.device) -> dict:
    from mhmoe.budget import train_flops_per_token
    from mhmoe.memory import estimate_memory
    from mhmoe.model import build_model
    from mhmoe.training.optim import build_optimizer

    torch.manual_seed(0)
    net = build_model(cfg.model, cfg.moe, activation_checkpointing=cfg.train.activation_checkpointing).to(device)
    if compile_model:
        net.compile()
    optimizer, _ = build_optimizer(net, cfg.optim, cfg.train.max_steps, fused=False)  # as under bf16-mixed
    train = cfg.train
    micro, accumulate = train.micro_batch, train.accumulate_grad_batches
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for step in range(steps + 3):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(accumulate):
            idx = torch.randint(0, cfg.model.vocab_size, (micro, train.seq_len + 1), device=device)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = net(idx[:, :-1])
                loss = F.cross_entropy(out.logits.flatten(0, 1).float(), idx[:, 1:].flatten()) + out.aux_loss
            (loss / accumulate).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        if step >= 3:  # warm-up (and compilation) excluded
            times.append(time.perf_counter() - start)
            losses.append(loss.item())
    tokens_per_s = train.batch_size * train.seq_len / statistics.median(times)
    return {"tokens_per_s": tokens_per_s,
            "flops_per_token": train_flops_per_token(cfg.model, cfg.moe, seq_len=train.seq_len),
            "peak_bytes": torch.cuda.max_memory_allocated(device),
            "estimate_bytes": estimate_memory(cfg, "bf16-mixed").total, "last_loss": losses[-1]}


def dispatch_check(cfg, device: torch.device, reps: int = 20) -> tuple[float, float]:
    """(max |grouped_mm - loop| / max |loop|, loop time / grouped_mm time) for one MoE layer's experts
    on a micro-batch's routed rows in bf16, forward + backward."""
    from mhmoe.model.experts import GroupedExperts

    moe = cfg.moe
    d_sub = cfg.model.d_model // moe.heads
    rows = cfg.train.micro_batch * cfg.train.seq_len * moe.heads * moe.top_k
    torch.manual_seed(0)
    grouped = GroupedExperts(moe.num_experts, d_sub, moe.expert_d_ff, "grouped_mm").to(device)
    loop = GroupedExperts(moe.num_experts, d_sub, moe.expert_d_ff, "loop").to(device)
    loop.load_state_dict(grouped.state_dict())
    experts = torch.sort(torch.randint(0, moe.num_experts, (rows,), device=device)).values
    counts = torch.bincount(experts, minlength=moe.num_experts)
    x = torch.randn(rows, d_sub, device=device, dtype=torch.bfloat16)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = grouped(x, counts), loop(x, counts)
    error = ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()

    def seconds(module) -> float:  # noqa: ANN001
        xr = x.clone().requires_grad_(True)
        for i in range(reps + 3):
            if i == 3:
                torch.cuda.synchronize(device)
                start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                module(xr, counts).float().pow(2).mean().backward()
        torch.cuda.synchronize(device)
        return (time.perf_counter() - start) / reps

    return error, seconds(loop) / seconds(grouped)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing to measure (exit 0)")
        return 0
    device = torch.device("cuda")
    peak, peak_basis = bf16_peak(device)
    free, total = torch.cuda.mem_get_info(device)
    print(f"device: {torch.cuda.get_device_name(device)}, {total / 1024**3:.1f} GiB ({free / 1024**3:.1f} free); "
          f"MFU against {peak_basis}; torch {torch.__version__}")
    print(f"{'variant':<10} {'mode':<8} {'micro x acc':>11} {'tokens/s':>10} {'MFU':>6} {'peak GiB':>9} "
          f"{'estimate GiB':>12} {'peak/est':>8} {'loss':>6}")
    for name, cfg in configs(args.batch_size).items():
        for compile_model in (False,) if args.no_compile else (False, True):
            r = train_steps(cfg, args.steps, compile_model, device)
            mfu = r["tokens_per_s"] * r["flops_per_token"] / peak
            print(f"{name:<10} {'compiled' if compile_model else 'eager':<8} "
                  f"{cfg.train.micro_batch:>5} x {cfg.train.accumulate_grad_batches:<3} {r['tokens_per_s']:>10,.0f} "
                  f"{mfu:>6.1%} {r['peak_bytes'] / 1024**3:>9.2f} {r['estimate_bytes'] / 1024**3:>12.2f} "
                  f"{r['peak_bytes'] / r['estimate_bytes']:>8.2f} {r['last_loss']:>6.2f}", flush=True)
        if cfg.moe.num_experts:
            error, ratio = dispatch_check(cfg, device)
            print(f"{name:<10} experts: grouped_mm vs per-expert loop: max rel. difference {error:.1e}, "
                  f"loop / grouped_mm time {ratio:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
