"""The report's figure registry: each ``analysis/fig_*.py`` module lists its figures in ``FIGURES``.

A figure is a :class:`FigureEntry` (name, caption, the metric histories it reads, draw function);
``mhmoe report`` imports every ``fig_*`` module, loads the union of the histories once and draws
each entry into ``<sweep>__<name>.{png,pdf}``. Adding a figure is a new ``fig_*`` module with its
entry (and its test); the report's code does not change.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.frame import MissingData, finished
from analysis.load import load_routing_arrays
from analysis.stats import interval_text
from analysis.style import safe_name
from mhmoe.tracking import names

MODULE_PREFIX = "fig_"


@dataclass(frozen=True)
class FigureInputs:
    """What every figure may read: the runs, their aggregates and, on first use, routing artifacts."""

    runs: pd.DataFrame
    agg: pd.DataFrame
    val_set: str | None
    """The figures' validation set (None: the sweep logged none; a figure that needs one is skipped)."""
    tracking_uri: str
    histories: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Long frame of the metric histories the entries asked for (:attr:`FigureEntry.history_keys`)."""
    grid_axes: tuple[str, ...] = ()
    """The spec's grid keys (dotted config keys), in spec order."""
    axis: str | None = None
    """The grid key of a per-axis figure (:attr:`FigureEntry.axes`)."""

    def need_set(self) -> str:
        if not self.val_set:
            raise MissingData("no val/<set>/ppl metric")
        return self.val_set

    @property
    def ppl(self) -> pd.DataFrame:
        """Aggregates of the final perplexity on :attr:`val_set` (empty without one)."""
        if not self.val_set:
            return self.agg.iloc[:0]
        return self.agg[self.agg["metric"] == names.val_metric(self.val_set, "ppl")]

    @property
    def ci(self) -> str:
        """What every error bar and band of a perplexity figure is."""
        return interval_text(self.ppl["n"])

    @cached_property
    def loads(self) -> dict[str, tuple[int, np.ndarray]]:
        return load_routing_arrays(finished(self.runs), "load", self.tracking_uri)

    @cached_property
    def divergence(self) -> dict[str, tuple[int, np.ndarray]]:
        return load_routing_arrays(finished(self.runs), "divergence", self.tracking_uri)


def no_histories(runs: pd.DataFrame) -> list[str]:
    return []


def no_notes(inputs: FigureInputs) -> list[str]:
    return []


@dataclass(frozen=True)
class FigureEntry:
    """One figure of the report."""

    name: str
    """File stem (``<sweep>__<name>.png``); a per-axis figure appends ``_<grid key>``."""
    caption: Callable[[FigureInputs], str]
    """The index's caption; called after :attr:`draw` succeeded."""
    draw: Callable[[FigureInputs], Figure]
    """Draws the figure; raises :class:`~analysis.frame.MissingData` (the reason) to be skipped."""
    history_keys: Callable[[pd.DataFrame], list[str]] = no_histories
    """Metric histories the figure reads (given the runs), loaded before any figure is drawn."""
    place: float = 0
    """Order in the index (the paper's figure number); figures of one place keep their module's order."""
    notes: Callable[[FigureInputs], list[str]] = no_notes
    """Lines for the index's list of what was left out, when the figure was drawn."""
    axes: Callable[[FigureInputs], list[str]] | None = None
    """Per-axis figure: the grid keys it is drawn for, one figure each (``inputs.axis`` set)."""

    def instances(self, inputs: FigureInputs) -> list[tuple[str, FigureInputs]]:
        """``(stem, inputs)`` of each figure this entry draws."""
        if self.axes is None:
            return [(self.name, inputs)]
        return [(f"{self.name}_{safe_name(key)}", replace(inputs, axis=key)) for key in self.axes(inputs)]


def registered() -> list[FigureEntry]:
    """Every ``FIGURES`` entry of the ``analysis/fig_*.py`` modules, in :attr:`FigureEntry.place` order."""
    import analysis

    modules = sorted(m.name for m in pkgutil.iter_modules(analysis.__path__) if m.name.startswith(MODULE_PREFIX))
    entries = [entry for m in modules for entry in importlib.import_module(f"analysis.{m}").FIGURES]
    return sorted(entries, key=lambda e: e.place)


def history_keys(entries: list[FigureEntry], runs: pd.DataFrame) -> list[str]:
    """The union of the entries' history keys, in first-asked order."""
    return list(dict.fromkeys(k for e in entries for k in e.history_keys(runs)))
