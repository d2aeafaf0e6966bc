"""Measured peak matmul throughput of this device, the denominator of MFU."""

from __future__ import annotations

import time

import torch


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
