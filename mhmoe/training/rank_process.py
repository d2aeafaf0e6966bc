"""``python -m mhmoe.training.rank_process REQUEST``: rank 0 of a data-parallel ``train()``.

:func:`mhmoe.training.ranks.train_in_rank_processes` writes REQUEST (the config, ``train()``'s
request's plain fields, the rank-zero hooks and where to put the result) and starts this module;
Lightning's DDP launcher re-runs it as ranks 1..N-1. Rank 0 writes the :class:`TrainResult` as JSON.
Each rank dies with the process that started it (:func:`~mhmoe.training.ranks.die_with_parent`).
A module of its own so that :mod:`mhmoe.training.ranks`, which ``train()`` calls, does not
import ``train()`` back.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from mhmoe.config.run import RunConfig
from mhmoe.training.hardware import resolve_accelerator
from mhmoe.training.quiet import quiet_if_parent_was
from mhmoe.training.ranks import RankZeroHooks, die_with_parent, global_rank
from mhmoe.training.request import TrainRequest
from mhmoe.training.runner import train


def _share_cores(cfg: RunConfig) -> None:
    """CPU ranks without ``train.num_threads`` split this machine's cores (else each takes all)."""
    if cfg.train.num_threads or resolve_accelerator(cfg) != "cpu":
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // cfg.train.devices))


def main(argv: list[str]) -> int:
    die_with_parent()  # first: a worker SIGKILLed while we start must not leave us training
    quiet_if_parent_was()
    request = json.loads(Path(argv[0]).read_text())
    kwargs = dict(request["kwargs"])  # TrainRequest.rank_fields()
    cfg = RunConfig.from_dict(request["config"])
    _share_cores(cfg)
    if request.get("hooks") and global_rank() == 0:
        kwargs["fence"], kwargs["callbacks"] = RankZeroHooks(**request["hooks"]).build()
    result = train(TrainRequest(config=cfg, **kwargs))
    if global_rank() == 0:
        Path(request["result"]).write_text(result.to_json())
    return 0


if __name__ == "__main__":
    # As the sweep worker: every store is written synchronously by now; skip the interpreter
    # teardown of torch / MLflow / the process group (seconds per rank on a busy CPU).
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
