"""Training-step MFU (dense vs MH-MoE, cpu-small) and the cost of routing telemetry + MLflow logging.

Run: .venv/bin/python benchmarks/train_step.py [--steps 12]

Everything is measured in one process: the fp32 matmul peak (the MFU denominator), the median
training step (forward + backward + AdamW) of each model, the routing-statistics computation of
one step (re-run on the step's real router outputs), and one batched MLflow log call of the
train and routing metrics into a SQLite store, amortised over the default logging intervals.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace

import mlflow
import torch
import torch.nn.functional as F

from mhmoe.config.run import resolve_run_config
from mhmoe.model import build_model
from mhmoe.model.routing import routing_stats, top_k_gates
from mhmoe.sizing.budget import train_flops_per_token
from mhmoe.sizing.matching import paper_variants
from mhmoe.training.optim import build_optimizer
from mhmoe.training.peak import measure_peak_flops
from mhmoe.training.telemetry import routing_metrics


def config_for(variant: str):
    overrides = paper_variants("cpu-small")[variant]
    flat = {f"{section}.{k}": v for section, values in overrides.items() for k, v in values.items()}
    return resolve_run_config("cpu-small", None, flat)


def median_step(net, optimizer, batch, steps: int) -> tuple[float, object]:
    inputs, targets = batch
    times, out = [], None
    for i in range(steps + 2):
        start = time.perf_counter()
        out = net(inputs)
        loss = F.cross_entropy(out.logits.flatten(0, 1), targets.flatten()) + out.aux_loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 2:  # skip warm-up steps
            times.append(time.perf_counter() - start)
    return statistics.median(times), out


def telemetry_seconds(net, inputs) -> float:
    """Time to recompute every MoE layer's routing statistics from its router output."""
    captured = []
    # layer=layer binds each hook to its own layer (a bare closure would pair every output with the last one).
    hooks = [layer.router.register_forward_hook(
        lambda m, i, o, layer=layer: captured.append((o.logits_SE.detach(), layer)))
             for layer in net.moe_layers().values()]
    with torch.no_grad():
        net(inputs)
    for h in hooks:
        h.remove()
    start = time.perf_counter()
    reps = 5
    for _ in range(reps):
        for logits, layer in captured:
            cfg = layer.cfg
            probs, _, experts = top_k_gates(logits, cfg.top_k, cfg.normalize_gates)
            lse = torch.logsumexp(logits, -1)
            routing_stats(logits, probs, lse, experts, None, layer.heads, cfg.activation_threshold,
                          lse.new_zeros(()), lse.new_zeros(()))
    return (time.perf_counter() - start) / reps


def logging_seconds(out, client: mlflow.MlflowClient, run_id: str) -> tuple[float, float]:
    """(train-metrics log call, routing-metrics log call) into SQLite, median of 5."""
    def timed(fn):
        ts = []
        for _ in range(5):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
        return statistics.median(ts)

    train_metrics = {"train/loss": 1.0, "train/aux_loss": 1.0, "train/z_loss": 1.0, "train/lr": 1e-3,
                     "train/tokens": 1.0, "perf/tokens_per_s": 1.0, "perf/mfu": 0.1}
    step = iter(range(10_000))
    def log(m: dict[str, float]) -> None:
        client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, 0, next(step)) for k, v in m.items()])

    return timed(lambda: log(train_metrics)), timed(lambda: log(routing_metrics(out.routing)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--compile", action="store_true", help="torch.compile each model (train.compile=true)")
    args = parser.parse_args()
    torch.manual_seed(0)
    # The matmul peak is measured next to every model's steps (a single measurement at start-up
    # swings with the machine's load); a peak is the best rate seen, so MFU divides by the max.
    peaks = [measure_peak_flops(torch.device("cpu"), torch.float32, seconds=1.0)]
    results = []
    tmp = tempfile.mkdtemp()
    client = mlflow.MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    run_id = client.create_run(client.create_experiment("bench", artifact_location=f"file://{tmp}/art")).info.run_id
    for variant in ("dense", "smoe", "mhmoe-h3"):
        cfg = config_for(variant)
        cfg = replace(cfg, model=replace(cfg.model, vocab_size=4096))
        net = build_model(cfg.architecture)
        optimizer, _ = build_optimizer(net, cfg.optim, cfg.train.max_steps)
        if args.compile:
            net.compile()
        B, T = cfg.train.batch_size, cfg.train.seq_len
        batch = (torch.randint(0, 4096, (B, T)), torch.randint(0, 4096, (B, T)))
        step_s, out = median_step(net, optimizer, batch, args.steps)
        peaks.append(measure_peak_flops(torch.device("cpu"), torch.float32, seconds=1.0))
        results.append((variant, step_s, train_flops_per_token(cfg.architecture, seq_len=T) * B * T, B * T))
        line = f"{variant:<9} step {step_s * 1e3:7.1f} ms  {B * T / step_s:8.0f} tok/s"
        if out.routing:
            tele = telemetry_seconds(net, batch[0])
            log_train, log_routing = logging_seconds(out, client, run_id)
            amortised = tele + log_train / cfg.train.log_every + log_routing / cfg.train.routing_every
            line += (f"  telemetry {tele / step_s:5.1%} + logging {(amortised - tele) / step_s:5.1%}"
                     f" = {amortised / step_s:5.1%} of a step (log_every={cfg.train.log_every}, "
                     f"routing_every={cfg.train.routing_every})")
        print(line)
    peak = max(peaks)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, fp32 matmul peak {peak / 1e9:.1f} GFLOP/s "
          f"(max of {len(peaks)} measurements between the models: {min(peaks) / 1e9:.1f} - {peak / 1e9:.1f})")
    for variant, step_s, flops, _ in results:
        print(f"{variant:<9} MFU {flops / step_s / peak:6.1%}")


if __name__ == "__main__":
    main()
