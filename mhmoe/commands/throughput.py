"""The throughput flags shared by ``mhmoe train --dry-run`` and ``mhmoe sweep plan``."""

from __future__ import annotations

import argparse

from mhmoe.sizing.memory import DEFAULT_MFU, H100_BF16_TFLOPS


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def add_throughput_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpu-tflops", type=_positive, default=H100_BF16_TFLOPS,
                        help=f"device peak TFLOP/s for device-hour estimates "
                             f"(default {H100_BF16_TFLOPS:g}: H100 bf16 dense)")
    parser.add_argument("--mfu", type=_fraction, default=DEFAULT_MFU,
                        help=f"assumed model FLOPs utilisation (default {DEFAULT_MFU:g})")
    parser.add_argument("--tokens-per-s", type=_positive,
                        help="measured training tokens/s per device (e.g. from benchmarks/gpu_check.py); "
                             "overrides --gpu-tflops x --mfu")
