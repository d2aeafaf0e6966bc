"""The full run config: architecture + optimisation + training loop + data + seed.

Resolution order is preset -> config file (YAML) -> dotted CLI overrides; unknown keys fail with
the list of valid keys before anything runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from mhmoe.config.architecture import Architecture, ModelConfig, MoEConfig, QuantConfig
from mhmoe.config.base import (
    ConfigError,
    apply_overrides,
    check,
    check_choice,
    check_positive,
    flatten,
    from_dict,
    nested_from_dotted,
    to_dict,
    unknown_key,
    valid_keys,
)
from mhmoe.config.data import DataConfig
from mhmoe.config.presets import preset
from mhmoe.config.yaml_strict import parse_value, read_yaml_file

MAX_STEPS = 10_000_000
"""Upper bound on train.max_steps: 100x the paper's 100k-step schedule. Anything larger is a typo
(``1e9``) that would otherwise queue a run that never ends."""
MAX_SEED = 2**32 - 1
"""numpy and Lightning seeds are unsigned 32-bit; Lightning replaces an out-of-range seed with a random one."""


LR_SCHEDULES = ("linear", "cosine", "wsd")
HASH_WHEN_SET = (("optim", "schedule", "linear"), ("optim", "decay_fraction", 0.2), ("train", "micro_batch_size", 0),
                 ("train", "activation_checkpointing", False), ("train", "devices", 1), ("train", "num_nodes", 1),
                 ("train", "strategy", "auto"), ("moe", "router", "topk"), ("data", "holdout_fraction", 0.0),
                 ("data", "token_dtype", "auto"))
"""(section, key, default) of config keys newer than the first sweeps: hashed only when not default."""


Precision = Literal["32-true", "bf16-mixed", "16-mixed"]
"""What ``train.precision`` resolves to (it also takes ``auto``: fp32 on CPU, bf16-mixed on GPU)."""

@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW with linear warmup then linear decay (the v2 recipe, docs/MODEL.md)."""

    lr: float = 6e-4
    """Peak learning rate."""
    betas: tuple[float, ...] = (0.9, 0.95)
    """Adam betas."""
    eps: float = 1e-6
    """Adam epsilon."""
    weight_decay: float = 0.1
    """Decoupled weight decay, applied to matrices only (not norms, biases)."""
    grad_clip: float = 2.0
    """Gradient-norm clip; 0 disables."""
    warmup_steps: int = 375
    """Linear warmup steps."""
    min_lr_ratio: float = 0.05
    """Final LR as a fraction of peak after linear decay (paper: 3e-5 / 6e-4 = 0.05)."""
    schedule: str = "linear"
    """LR after warmup: linear decay (the paper's), cosine decay, or warmup-stable-decay (peak LR,
    then a linear decay over the last ``decay_fraction`` of the steps), each down to ``min_lr_ratio``."""
    decay_fraction: float = 0.2
    """wsd only: the share of all steps spent in the final decay."""

    def __post_init__(self) -> None:
        check_positive("optim.lr", self.lr)
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
              f"optim.betas={list(self.betas)} must be two numbers in [0, 1)")
        check_positive("optim.eps", self.eps)
        check_positive("optim.weight_decay", self.weight_decay, allow_zero=True)
        check_positive("optim.grad_clip", self.grad_clip, allow_zero=True)
        check_positive("optim.warmup_steps", self.warmup_steps, allow_zero=True)
        check(0 <= self.min_lr_ratio <= 1, f"optim.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        check_choice("optim.schedule", self.schedule, LR_SCHEDULES)
        check(0 < self.decay_fraction <= 1, f"optim.decay_fraction={self.decay_fraction} must be in (0, 1]")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The training loop: sizes, intervals, precision, devices."""

    max_steps: int = 1000
    """Optimizer steps (one batch each)."""
    batch_size: int = 16
    """Sequences per optimizer step, summed over devices and micro-batches."""
    seq_len: int = 256
    """Tokens per training sequence (<= model.max_seq_len)."""
    val_every: int = 250
    """Validate every N steps (and always at the end)."""
    log_every: int = 10
    """Log train/* and perf/* every N steps."""
    routing_every: int = 50
    """Log per-layer routing telemetry every N steps."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint every N steps (0 = at each validation)."""
    precision: str = "auto"
    """auto (fp32 on CPU, bf16-mixed on GPU), 32-true, bf16-mixed, 16-mixed."""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu, gpu."""
    num_threads: int = 0
    """torch CPU threads; 0 = leave torch's default."""
    compile: bool = False
    """torch.compile the model."""
    peak_flops: float = 0.0
    """Device peak FLOP/s, the MFU denominator; 0 = a GPU's datasheet peak, else 50 GFLOP/s per CPU thread
    (fixed, so MFU compares across runs; a matmul measured at start-up is logged beside it)."""
    micro_batch_size: int = 0
    """Sequences per forward/backward on one device; batch_size is accumulated over
    batch_size / (micro_batch_size x devices x num_nodes) micro-batches. 0 = no accumulation."""
    activation_checkpointing: bool = False
    """Recompute each transformer block in backward (less activation memory, ~1/3 more compute)."""
    devices: int = 1
    """Devices per node for data parallel training (Lightning ``devices``)."""
    num_nodes: int = 1
    """Nodes for data parallel training (Lightning ``num_nodes``)."""
    strategy: str = "auto"
    """Lightning strategy: auto (ddp when devices x num_nodes > 1), ddp, fsdp."""
    log_checkpoint: bool | None = None
    """Log the final checkpoint as an MLflow artifact; None = only when it is at most 256 MB."""
    system_metrics: bool = True
    """Log CPU/GPU utilisation and memory to the run every 10 s (MLflow's system metrics, rank 0)."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "seq_len", "val_every", "log_every", "routing_every"):
            check_positive(f"train.{name}", getattr(self, name))
        check(self.max_steps <= MAX_STEPS, f"train.max_steps={self.max_steps} must be <= {MAX_STEPS:,} "
              "(100x the paper's 100k-step schedule)")
        check_positive("train.checkpoint_every", self.checkpoint_every, allow_zero=True)
        check_choice("train.precision", self.precision, ("auto", *get_args(Precision)))
        check_choice("train.accelerator", self.accelerator, ("auto", "cpu", "gpu", "cuda"))
        check_positive("train.num_threads", self.num_threads, allow_zero=True)
        check_positive("train.peak_flops", self.peak_flops, allow_zero=True)
        _check_parallel_layout(self)

    @property
    def world_size(self) -> int:
        """Data-parallel ranks: devices x num_nodes."""
        return self.devices * self.num_nodes

    @property
    def micro_batch(self) -> int:
        """Sequences per forward/backward on one rank (micro_batch_size, 0 resolved)."""
        return self.micro_batch_size or self.batch_size // self.world_size

    @property
    def accumulate_grad_batches(self) -> int:
        """Micro-batches each rank accumulates per optimizer step."""
        return self.batch_size // (self.micro_batch * self.world_size)


def _check_parallel_layout(train: TrainConfig) -> None:
    """batch_size must split evenly into ranks x micro-batches (the data order depends on it)."""
    check_positive("train.micro_batch_size", train.micro_batch_size, allow_zero=True)
    check_positive("train.devices", train.devices)
    check_positive("train.num_nodes", train.num_nodes)
    check_choice("train.strategy", train.strategy, ("auto", "ddp", "fsdp"))
    check(train.strategy != "fsdp" or train.accelerator in ("gpu", "cuda", "auto"),
          f"train.strategy=fsdp needs GPUs; with train.accelerator={train.accelerator!r} choose train.strategy "
          "from ['auto', 'ddp']")
    world = train.devices * train.num_nodes
    check(train.batch_size % world == 0,
          f"train.batch_size={train.batch_size} must be divisible by train.devices x train.num_nodes={world}")
    micro = train.micro_batch_size or train.batch_size // world
    check(train.batch_size % (micro * world) == 0,
          f"train.micro_batch_size={micro} x devices x num_nodes={world} must divide "
          f"train.batch_size={train.batch_size}; choose a micro_batch_size that divides {train.batch_size // world}")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything that defines one training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    """Seed for init, data order and dropout-free training."""

    def __post_init__(self) -> None:
        check(0 <= self.seed <= MAX_SEED, f"seed={self.seed} must be an integer in [0, {MAX_SEED}]")
        _ = self.architecture  # validates the architecture, once per resolved config
        check(
            self.train.seq_len <= self.model.max_seq_len,
            f"train.seq_len={self.train.seq_len} exceeds model.max_seq_len={self.model.max_seq_len}",
        )

    @cached_property
    def architecture(self) -> Architecture:
        """model + moe + quant, validated once: what the model builder, budget and memory estimate take."""
        return Architecture(model=self.model, moe=self.moe, quant=self.quant)

    @property
    def variant(self) -> str:
        return self.architecture.label + ("" if not self.quant.enabled else f"+w{self.quant.weight_bits:g}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def flat(self) -> dict[str, Any]:
        return flatten(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def config_hash(self) -> str:
        """Stable short hash of the resolved config: identifies a sweep grid point."""
        data = self.to_dict()
        # What gets uploaded or monitored does not change what is trained.
        for key in ("log_checkpoint", "system_metrics"):
            data["train"].pop(key, None)
        # Keys added after sweeps were first submitted count only when set away from their
        # default, so resubmitting an earlier sweep finds its points under the same hashes.
        for section, key, default in HASH_WHEN_SET:
            if data[section].get(key) == default:
                data[section].pop(key)
        payload = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return from_dict(cls, data)


def run_config_keys() -> list[str]:
    return valid_keys(RunConfig)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file as nested overrides (dotted top-level keys allowed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    data = read_yaml_file(path, "config file") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of config sections")
    return data


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_run_config(
    preset_name: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """preset -> file -> dotted overrides, validated; unknown keys list the valid ones."""
    return build_run_config(config_base(preset_name, config_file), overrides or {})


def config_base(preset_name: str | None = None, config_file: str | Path | None = None) -> dict[str, Any]:
    """The preset with the config file merged over it, as a nested dict checked for unknown keys.

    The part of :func:`resolve_run_config` that reads files: a sweep plan builds it once and
    resolves every grid point's overrides over it with :func:`build_run_config`.
    """
    nested: dict[str, Any] = preset(preset_name) if preset_name else {}
    if config_file:
        file_data = load_config_file(config_file)
        dotted = {k: v for k, v in file_data.items() if "." in k}
        plain = {k: v for k, v in file_data.items() if "." not in k}
        nested = _merge(nested, plain)
        nested = _merge(nested, nested_from_dotted(dotted))
    _reject_unknown_nested(nested)
    return nested


def build_run_config(base: dict[str, Any], overrides: dict[str, Any]) -> RunConfig:
    """Dotted ``overrides`` over a :func:`config_base` dict (left unchanged), validated."""
    return apply_overrides(RunConfig, base, overrides)


def _reject_unknown_nested(nested: dict[str, Any], prefix: str = "") -> None:
    keys = set(run_config_keys())
    sections = {k.split(".")[0] for k in keys}
    for key, value in nested.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and full in sections:
            for sub in value:
                if f"{full}.{sub}" not in keys:
                    raise ConfigError(unknown_key(f"{full}.{sub}", keys))
        elif full not in keys:
            raise ConfigError(unknown_key(full, keys))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["moe.heads=3", "quant.weight_bits=1.58"]`` -> dict with YAML-typed values."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. moe.heads=3)")
        key, _, text = item.partition("=")
        try:
            out[key.strip()] = parse_value(text)
        except ConfigError as err:
            raise ConfigError(f"override {key.strip()}: {err}") from None
    return out
