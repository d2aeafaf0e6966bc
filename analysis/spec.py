"""What the report needs from a sweep spec: its name, tracking URI and primary validation set.

This is the one place that reads specs here: through :func:`mhmoe.sweep.spec.load_spec` when the
sweep package is installed, else straight from the YAML (``name``, default the file stem).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

_SET_METRIC = re.compile(r"^val/(?P<set>[^/]+)/(ppl|loss)$")


@dataclass(frozen=True)
class SpecInfo:
    path: Path
    name: str
    """Sweep name: the ``mhmoe.sweep`` tag of its runs."""
    tracking_uri: str | None = None
    """The spec's MLflow store (None = the default store)."""
    val_set: str | None = None
    """The set of the spec's optimised metric (``val/<set>/ppl``), used for the ordering check."""


def read_spec(path_or_name: str | Path) -> SpecInfo:
    """A spec path (or a spec shipped in ``experiments/``, e.g. ``smoke``) -> :class:`SpecInfo`.

    Raises the sweep package's SpecError (a ConfigError) for a missing or invalid spec, or
    FileNotFoundError when reading the YAML directly.
    """
    try:
        from mhmoe.sweep.spec import load_spec
    except ModuleNotFoundError as err:  # the sweep package is not there: read the fields ourselves
        if err.name not in ("mhmoe.sweep", "mhmoe.sweep.spec"):
            raise
        return _from_yaml(Path(path_or_name))
    # check_points=False: a spec whose grid no longer resolves (code moved on) still names its runs.
    spec = load_spec(path_or_name, check_points=False)
    sets = list(spec.val_sets or [])
    return SpecInfo(Path(spec.path), spec.name, spec.tracking_uri, _metric_set(spec.metric, sets))


def sweep_name(path_or_name: str | Path) -> str:
    return read_spec(path_or_name).name


def _metric_set(metric: str | None, sets: list[str]) -> str | None:
    m = _SET_METRIC.match(metric or "")
    if m:
        return m.group("set")
    return str(sets[0]).split("=", 1)[0] if sets else None


def _from_yaml(path: Path) -> SpecInfo:
    data = yaml.safe_load(path.read_text()) or {}
    data = data if isinstance(data, dict) else {}
    validation = data.get("validation") if isinstance(data.get("validation"), dict) else {}
    return SpecInfo(path, str(data.get("name") or path.stem), data.get("tracking_uri"),
                    _metric_set(validation.get("metric"), list(validation.get("sets") or [])))
