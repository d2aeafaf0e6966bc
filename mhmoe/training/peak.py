"""The denominator of MFU: the device's datasheet peak, and a measured matmul rate kept beside it.

MFU is only comparable between runs when its denominator is fixed. A matmul timed at every start
varied 1.8x within one sweep on a shared CPU host, so it is recorded (``perf.measured_matmul_flops``)
but not divided by. The denominator (``perf.peak_flops``, with ``perf.peak_source``) is, in order:
``train.peak_flops`` when set; the datasheet peak of a known GPU for the training dtype (Lightning's
table, as papers report MFU); else a nominal CPU peak of :data:`CPU_PEAK_FLOPS_PER_THREAD` per torch
thread in fp32, a fixed figure that makes CPU runs comparable with each other, not with GPU papers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

CPU_PEAK_FLOPS_PER_THREAD = 50e9
"""fp32 FLOP/s per core: an AVX2 core doing 2 FMAs on 8 floats per cycle reaches about 2.5-3 GHz x 32. A
1024^2 matmul measured 35-67 GFLOP/s per core on the 2-core CI machines."""


@dataclass(frozen=True)
class Peak:
    flops: float
    """The MFU denominator (FLOP/s of one device)."""
    source: str
    """``config`` (train.peak_flops), ``datasheet`` (a known GPU) or ``cpu-nominal``."""


def peak_flops(device: torch.device, dtype: torch.dtype, configured: float = 0.0) -> Peak:
    """The MFU denominator for ``device`` training in ``dtype`` (see the module docstring)."""
    if configured:
        return Peak(float(configured), "config")
    if device.type != "cpu":
        from lightning.fabric.utilities.throughput import get_available_flops

        datasheet = get_available_flops(device, dtype)
        if datasheet:
            return Peak(float(datasheet), "datasheet")
        return Peak(measure_peak_flops(device, dtype), "measured")  # a GPU Lightning does not list
    return Peak(CPU_PEAK_FLOPS_PER_THREAD * torch.get_num_threads(), "cpu-nominal")


def measure_peak_flops(device: torch.device, dtype: torch.dtype, size: int | None = None,
                       seconds: float = 0.3) -> float:
    """FLOP/s of a square matmul repeated for ``seconds``; fp32 on CPU, the training dtype on GPU."""
    size = size or (8192 if device.type == "cuda" else 1024)  # big enough to saturate the device
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up (thread pools, cuBLAS handles)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count < 3:
        torch.mm(a, b)
        count += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    return 2 * size**3 * count / elapsed
