"""The memory preflight of a run about to train: the sizing layer's estimate (:mod:`mhmoe.sizing.memory`)
against the device this process trains on. Training's concern (accelerator, precision, ranks), so
it lives here and imports the estimates downward; :mod:`mhmoe.sizing.memory` stays torch- and training-free."""

from __future__ import annotations

import os

from mhmoe.config.run import RunConfig
from mhmoe.sizing.memory import check_fits_device
from mhmoe.training.hardware import resolve_accelerator, resolve_precision
from mhmoe.training.ranks import launched_as_rank


def machine_memory_bytes() -> int:
    """Physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_device_memory(cfg: RunConfig) -> None:
    """:func:`~mhmoe.sizing.memory.check_fits_device` for the device the run trains on: on CUDA against the free
    memory of this rank's device (``torch.cuda.mem_get_info``), on CPU against this machine's memory shared
    by its ``train.devices`` ranks (checked by the caller, once). A multi-device CUDA run is checked in
    its rank processes, not by the caller, which would otherwise hold a CUDA context on device 0
    for the whole run. An accelerator this machine lacks is refused by :func:`resolve_accelerator`."""
    import torch

    accelerator = resolve_accelerator(cfg)
    precision = resolve_precision(cfg, accelerator)
    if accelerator == "cpu":
        if not launched_as_rank():
            check_fits_device(cfg, precision, machine_memory_bytes() / cfg.train.devices,
                              available=f"this machine has for each of its {cfg.train.devices} CPU rank(s)")
        return
    if cfg.train.world_size > 1 and not launched_as_rank():
        return
    free, _total = torch.cuda.mem_get_info(int(os.environ.get("LOCAL_RANK", "0")))
    check_fits_device(cfg, precision, free)
