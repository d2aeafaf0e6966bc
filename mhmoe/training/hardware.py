"""Which accelerator and numeric precision a run trains with, resolved from its config, and whether
a multi-node run has a cluster launcher to start its nodes."""

from __future__ import annotations

import os
import warnings
from typing import cast

from mhmoe.config.base import ConfigError
from mhmoe.config.run import Precision, RunConfig
from mhmoe.training.failures import NoClusterEnvironment


def resolve_precision(config: RunConfig, accelerator: str) -> Precision:
    """fp32 on CPU (bf16 is ~100x slower without AMX), bf16-mixed on GPU unless set."""
    if config.train.precision != "auto":
        return cast(Precision, config.train.precision)
    return "bf16-mixed" if accelerator == "gpu" else "32-true"


def resolve_accelerator(config: RunConfig) -> str:
    """``cpu`` or ``gpu``; a GPU asked for on a machine where torch sees none is refused (ConfigError)
    before anything is created, instead of Lightning's traceback once the run has started."""
    # torch here, not at the top: the CLI checks a config with this before it pays for torch.
    import torch

    acc = config.train.accelerator
    if acc == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if acc in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.accelerator={acc!r} but torch sees no CUDA GPU on this machine; "
                          "choose train.accelerator from ['auto', 'cpu']")
    return "gpu" if acc == "cuda" else acc


def cluster_environment() -> str | None:
    """The cluster launcher Lightning detects for this process (its class name), else None.

    The environments Lightning itself tries, in its order (``KubeflowEnvironment`` cannot be detected:
    it is used only when passed explicitly), plus Lightning's documented manual launch of a
    general-purpose cluster: ``MASTER_ADDR`` and ``NODE_RANK`` set on every node.
    """
    from lightning.fabric.plugins.environments import (
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    with warnings.catch_warnings():  # SLURM's "srun is available but not used" hint: the refusal says more
        warnings.simplefilter("ignore")
        for env in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment):
            if env.detect():
                return env.__name__
    if "MASTER_ADDR" in os.environ and "NODE_RANK" in os.environ:
        return "LightningEnvironment"
    return None


def check_cluster_launch(config: RunConfig) -> None:
    """Raise :class:`NoClusterEnvironment` when ``train.num_nodes > 1`` and no launcher starts the other
    nodes: Lightning would wait for them for ever instead of failing."""
    nodes = config.train.num_nodes
    if nodes > 1 and cluster_environment() is None:
        raise NoClusterEnvironment(
            f"train.num_nodes={nodes} needs a cluster launcher that starts every node (srun, torchrun, jsrun, "
            "mpirun, or MASTER_ADDR and NODE_RANK set on each node) and none is detected; run under one, "
            "or set train.num_nodes=1")
