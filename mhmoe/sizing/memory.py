"""Preflight: device memory and compute of one training run, from its config alone (no torch).

The sizing layer (beside :mod:`mhmoe.sizing.budget`): pure estimates that import nothing from training;
checking them against the device a run trains on is :mod:`mhmoe.training.preflight`.

Memory on one rank = model state + activations of one micro-batch:

- weights: fp32 master parameters (Lightning's ``bf16-mixed`` keeps fp32 weights and autocasts);
  under mixed precision autocast also holds a bf16 copy of the weights during forward/backward;
- gradients: fp32, one per parameter;
- optimizer: AdamW's two fp32 moments per parameter (the per-tensor ``step`` scalars are ignored);
- activations: the tensors autograd keeps for backward, counted per token from the model the
  harness builds (see :func:`activation_bytes_per_token`); with activation checkpointing only each
  block's input is kept, plus one block's activations while it is recomputed.

Not counted: allocator fragmentation, kernel workspaces, the gradient of the activation being
back-propagated, and the CUDA context (~0.5-1 GB). :data:`HEADROOM` covers them when a
micro-batch size is chosen. FSDP shards the model state over ranks (not modelled: the estimate is
the DDP one, an upper bound).

Compute: training FLOPs are :func:`mhmoe.sizing.budget.train_flops_per_token` x tokens (one more forward
when checkpointing); device-hours assume a stated peak and MFU, or a measured tokens/s.
"""

from __future__ import annotations

from dataclasses import dataclass

from mhmoe.config.base import ConfigError
from mhmoe.config.run import RunConfig
from mhmoe.sizing.budget import count_params, train_flops_per_token

FP32 = 4
HEADROOM = 0.9
"""Fraction of device memory a chosen micro-batch may use (the rest: what the estimate leaves out)."""
H100_BF16_TFLOPS = 989.0
"""H100 SXM dense bf16 peak, the default ``--gpu-tflops``."""
DEFAULT_MFU = 0.35
"""Assumed model FLOPs utilisation for device-hour estimates."""
GIB = 1024**3


def activation_dtype_bytes(precision: str) -> int:
    """Bytes of an autocast activation: 2 under bf16/fp16 mixed precision, else 4."""
    return 2 if precision.startswith(("bf16", "16")) else FP32


def _attention_per_token(cfg: RunConfig, a: int) -> int:
    """Pre-norm (fp32 input, normed output), q/k/v, rotated q/k, SDPA output, per-head logsumexp."""
    d = cfg.model.d_model
    return FP32 * d + a * d + 3 * a * d + 2 * a * d + a * d + FP32 * cfg.model.n_heads


def _dense_ffn_per_token(d: int, d_ff: int, a: int) -> int:
    """SwiGLU: input, w1 x, w3 x, silu(w1 x), their product (input of w2)."""
    return a * d + 4 * a * d_ff


def _moe_per_token(cfg: RunConfig, a: int) -> int:
    """Head projection output, fp32 router (input, logits, probabilities), routed copies of the
    sub-tokens (h k of size d/h = k d), expert SwiGLU hidden states per assignment, expert outputs in
    sorted and in assignment order, the combined output and the merge projection's input."""
    layer, moe = cfg.architecture.layer, cfg.moe
    assert layer is not None, "only a routed variant has MoE blocks"
    d, h, k = layer.d_model, layer.heads, layer.top_k
    head = a * d if layer.head_proj else 0
    merge = a * d if layer.merge_proj else 0
    router = FP32 * d + 2 * FP32 * h * layer.num_experts
    experts = a * k * d + 4 * a * layer.active_expert_hidden + 2 * a * k * d
    shared = _dense_ffn_per_token(d, moe.shared_expert_d_ff, a) if moe.shared_expert_d_ff else 0
    return a * d + head + router + experts + a * d + merge + shared


def block_activation_bytes_per_token(cfg: RunConfig, index: int, precision: str) -> int:
    """Bytes block ``index`` keeps for backward per token (pre-norms included)."""
    a = activation_dtype_bytes(precision)
    d = cfg.model.d_model
    ffn = _moe_per_token(cfg, a) if cfg.model.is_moe_block(index) else _dense_ffn_per_token(d, cfg.model.d_ff, a)
    return _attention_per_token(cfg, a) + FP32 * d + ffn


def head_activation_bytes_per_token(cfg: RunConfig, precision: str) -> int:
    """Final norm and LM head: the norm's input and output and the fp32 log-softmax of the loss
    (the logits themselves and their fp32 copy are not kept for backward)."""
    a = activation_dtype_bytes(precision)
    d, v = cfg.model.d_model, cfg.model.vocab_size
    return FP32 * d + a * d + FP32 * v


def backward_transient_bytes_per_token(cfg: RunConfig, precision: str) -> int:
    """Live only at the start of backward: the fp32 gradient of the log-softmax and of the logits."""
    return FP32 * cfg.model.vocab_size + activation_dtype_bytes(precision) * cfg.model.vocab_size


def activation_bytes_per_token(cfg: RunConfig, precision: str, *, checkpointing: bool | None = None) -> int:
    """Peak bytes kept for backward per token of a micro-batch.

    Without checkpointing: every block's activations plus the head's. With it: each block's fp32
    input (what the checkpoint keeps), the head, and the largest block while it is recomputed.
    """
    checkpointing = cfg.train.activation_checkpointing if checkpointing is None else checkpointing
    blocks = [block_activation_bytes_per_token(cfg, i, precision) for i in range(cfg.model.n_layers)]
    embed = FP32 * cfg.model.d_model
    head = head_activation_bytes_per_token(cfg, precision)
    if not checkpointing:
        return embed + sum(blocks) + head
    return embed + cfg.model.n_layers * FP32 * cfg.model.d_model + head + max(blocks)


@dataclass(frozen=True, kw_only=True)
class MemoryEstimate:
    """Bytes on one data-parallel rank."""

    params_total: int
    params_active: int
    weights: int
    weight_casts: int
    """Autocast's low-precision weight copies (0 in fp32)."""
    gradients: int
    optimizer: int
    micro_batch_size: int
    activations: int
    """Per micro-batch, with the run's activation-checkpointing setting."""
    activations_no_checkpointing: int
    activations_checkpointing: int
    backward_transient: int
    """Loss and logit gradients live at the start of backward, per micro-batch."""

    @property
    def model_state(self) -> int:
        return self.weights + self.weight_casts + self.gradients + self.optimizer

    @property
    def total(self) -> int:
        return self.model_state + self.activations + self.backward_transient


def estimate_memory(cfg: RunConfig, precision: str, *, micro_batch_size: int | None = None) -> MemoryEstimate:
    """Memory of ``cfg`` on one rank at ``precision`` (a resolved Lightning precision string)."""
    params = count_params(cfg.architecture)
    micro = micro_batch_size or cfg.train.micro_batch
    tokens = micro * cfg.train.seq_len
    no_ckpt = tokens * activation_bytes_per_token(cfg, precision, checkpointing=False)
    ckpt = tokens * activation_bytes_per_token(cfg, precision, checkpointing=True)
    low = activation_dtype_bytes(precision)
    return MemoryEstimate(
        params_total=params.total, params_active=params.active,
        weights=FP32 * params.total, weight_casts=low * params.total if low < FP32 else 0,
        gradients=FP32 * params.total, optimizer=2 * FP32 * params.total,
        micro_batch_size=micro, activations=ckpt if cfg.train.activation_checkpointing else no_ckpt,
        activations_no_checkpointing=no_ckpt, activations_checkpointing=ckpt,
        backward_transient=tokens * backward_transient_bytes_per_token(cfg, precision),
    )


def largest_fitting_micro_batch(cfg: RunConfig, precision: str, device_bytes: float) -> int | None:
    """Largest micro_batch_size dividing the per-rank batch whose estimate fits ``HEADROOM`` x device."""
    per_rank = cfg.train.batch_size // cfg.train.world_size
    for micro in sorted((m for m in range(1, per_rank + 1) if per_rank % m == 0), reverse=True):
        if estimate_memory(cfg, precision, micro_batch_size=micro).total <= HEADROOM * device_bytes:
            return micro
    return None


@dataclass(frozen=True, kw_only=True)
class ComputeEstimate:
    tokens: int
    train_flops: float
    """Model training FLOPs (6 x forward multiply-adds x tokens), + 1 forward when checkpointing."""
    device_hours: float
    basis: str
    """What the hours assume, e.g. ``989 TFLOP/s x 35% MFU``."""


def estimate_compute(cfg: RunConfig, *, gpu_tflops: float = H100_BF16_TFLOPS, mfu: float = DEFAULT_MFU,
                     tokens_per_s: float | None = None) -> ComputeEstimate:
    """FLOPs and device-hours of the whole run; ``tokens_per_s`` (per device) overrides peak x MFU."""
    train = cfg.train
    tokens = train.max_steps * train.batch_size * train.seq_len
    flops = float(train_flops_per_token(cfg.architecture, seq_len=train.seq_len)) * tokens
    if train.activation_checkpointing:
        flops *= 4 / 3  # the recomputed forward
    if tokens_per_s:
        hours, basis = tokens / tokens_per_s / 3600, f"{tokens_per_s:,.0f} tokens/s per device"
    else:
        hours, basis = flops / (gpu_tflops * 1e12 * mfu) / 3600, f"{gpu_tflops:g} TFLOP/s x {mfu:.0%} MFU"
    return ComputeEstimate(tokens=tokens, train_flops=flops, device_hours=hours, basis=basis)


def planned_precision(cfg: RunConfig) -> str:
    """The precision a run will use on the device it targets: ``train.precision`` unless auto, then
    32-true on CPU and bf16-mixed otherwise (the preflight plans for the GPU an auto run gets there)."""
    if cfg.train.precision != "auto":
        return cfg.train.precision
    return "32-true" if cfg.train.accelerator == "cpu" else "bf16-mixed"


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def preflight_lines(cfg: RunConfig, precision: str, compute: ComputeEstimate) -> list[str]:
    """The per-trial preflight printed by ``mhmoe train --dry-run``."""
    mem = estimate_memory(cfg, precision)
    train = cfg.train
    return [
        f"preflight ({precision}, {train.world_size} rank(s), micro_batch_size={mem.micro_batch_size} x "
        f"{train.accumulate_grad_batches} accumulated, activation_checkpointing={train.activation_checkpointing}):",
        f"  params: {mem.params_total:,} total, {mem.params_active:,} active per token",
        f"  weights {_gib(mem.weights)} + weight casts {_gib(mem.weight_casts)} + gradients {_gib(mem.gradients)} "
        f"+ AdamW state {_gib(mem.optimizer)} = {_gib(mem.model_state)}",
        f"  activations per micro-batch: {_gib(mem.activations_no_checkpointing)} without checkpointing, "
        f"{_gib(mem.activations_checkpointing)} with",
        f"  estimated peak per device: {_gib(mem.total)}",
        f"  training: {compute.tokens:,} tokens, {compute.train_flops:.3g} FLOPs, about "
        f"{compute.device_hours * train.world_size:,.1f} device-hours at {compute.basis}",
    ]


class DeviceMemoryError(ConfigError):
    """A trial whose memory estimate exceeds the free device memory (raised before training; a
    ConfigError because the fix is a config change: micro_batch_size, checkpointing, devices)."""


def check_fits_device(cfg: RunConfig, precision: str, free_bytes: float, *, available: str = "free") -> None:
    """Refuse a trial whose estimate exceeds ``free_bytes`` (described by ``available``), naming a
    micro_batch_size that would fit."""
    mem = estimate_memory(cfg, precision)
    if mem.total <= free_bytes:
        return
    fits = largest_fitting_micro_batch(cfg, precision, free_bytes)
    hint = (f"train.micro_batch_size={fits} would fit" if fits else
            "no micro_batch_size fits; try train.activation_checkpointing=true or more devices")
    raise DeviceMemoryError(f"estimated {_gib(mem.total)} per device exceeds the {_gib(free_bytes)} {available} "
                            f"(micro_batch_size={mem.micro_batch_size}); {hint}")


def sweep_preflight_lines(name: str, labelled: list[tuple[str, RunConfig]], *, gpu_tflops: float = H100_BF16_TFLOPS,
                          mfu: float = DEFAULT_MFU, tokens_per_s: float | None = None) -> list[str]:
    """One line per trial (peak memory per device, micro-batching, device-hours) and the grid total."""
    lines, total_hours, basis = [], 0.0, ""
    for label, cfg in labelled:
        precision = planned_precision(cfg)
        mem = estimate_memory(cfg, precision)
        compute = estimate_compute(cfg, gpu_tflops=gpu_tflops, mfu=mfu, tokens_per_s=tokens_per_s)
        hours = compute.device_hours * cfg.train.world_size
        total_hours, basis = total_hours + hours, compute.basis
        lines.append(f"  {label}: {_gib(mem.total)} per device ({precision}, {cfg.train.world_size} device(s), "
                     f"micro {mem.micro_batch_size} x {cfg.train.accumulate_grad_batches}, checkpointing "
                     f"{'on' if cfg.train.activation_checkpointing else 'off'}), {compute.train_flops:.3g} FLOPs, "
                     f"{hours:,.1f} device-hours")
    header = f"preflight {name}: {len(labelled)} trials, about {total_hours:,.0f} GPU-hours at {basis}"
    if tokens_per_s is None and gpu_tflops == H100_BF16_TFLOPS:
        header += " (H100-class bf16 dense peak)"
    return [header, *lines]
