"""argparse ``type=`` validators for numeric and folder flags: a bad value is one line naming what is allowed.

Used by the ``mhmoe`` commands and by the sweep worker options (:mod:`mhmoe.sweep.options`), so
they live outside :mod:`mhmoe.commands`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from mhmoe.config.folders import folder_problem


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse ``type=``: an integer >= ``minimum`` (``--workers 0`` is refused, not a silent no-op)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give an integer >= {minimum}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not allowed; give an integer >= {minimum}")
        return value

    return parse


def int_between(low: int, high: int) -> Callable[[str], int]:
    """argparse ``type=``: an integer in [low, high] (a TCP port: 1..65535)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give one in {low}..{high}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not allowed; give an integer in {low}..{high}")
        return value

    return parse


def positive_float(text: str) -> float:
    """argparse ``type=``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a finite number > 0") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not allowed; give a finite number > 0")
    return value


def folder(text: str) -> Path:
    """argparse ``type=``: a folder that exists or can be created (no component is a regular file)."""
    problem = folder_problem(Path(text))
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return Path(text)


__all__ = ["folder", "int_at_least", "int_between", "positive_float"]
