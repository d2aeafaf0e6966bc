"""``--set KEY=VALUE`` on sweep commands: change one value of a spec without copying the file.

A key is either a path into the spec (``budget.steps=200``, ``seeds.max=10``, ``retries=4``,
``grid.moe.heads=[2,3]``, ``groups.smoe.optim.lr=1e-3``) or a config key (``optim.lr=1e-3``,
``train.val_every=50``), which goes into ``base.overrides``. Values are YAML (``[2, 3]``, ``1e-3``,
``true``). The result is validated by :func:`mhmoe.sweep.spec.parse_spec` like any spec.

A study is one set of points: when the overrides change the points (their config hashes), the sweep
gets a new name (``<name>.<8 hex digits of the overrides>``, or ``--name``), so it does not mix with the
study of the unchanged spec. Overrides that leave the points alone (``retries``, ``seeds.max``,
``margin``) keep the name: that is how an existing sweep is extended.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mhmoe.config.run import parse_overrides
from mhmoe.sweep.spec import SPEC_KEYS, SpecError, SweepSpec, parse_spec, read_spec_data

KEYED_SECTIONS = {"grid": 0, "groups": 1}
"""Spec sections whose entries are keyed by a dotted config key: after the section, how many plain
components (a group name) come before the config key."""


def apply_sets(data: dict[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """A copy of the spec's data with every ``KEY=VALUE`` of ``sets`` applied (see the module docstring)."""
    try:
        values = parse_overrides(list(sets))
    except Exception as err:  # noqa: BLE001 - ConfigError, as one refusal line naming --set
        raise SpecError([f"--set: {err}"]) from None
    out = copy.deepcopy(data)
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if head in SPEC_KEYS and (rest or head not in ("base", "match")):
            _set_spec_path(out, head, rest, value, key)
        else:
            base = out.setdefault("base", {})
            if not isinstance(base, dict):
                raise SpecError([f"--set {key}: the spec's base is not a mapping"])
            base.setdefault("overrides", {})[key] = value
    return out


def _set_spec_path(data: dict[str, Any], head: str, rest: str, value: Any, key: str) -> None:
    if not rest:
        data[head] = value
        return
    node = data.setdefault(head, {})
    parts = rest.split(".")
    plain = KEYED_SECTIONS.get(head)
    if plain is not None:  # grid.<config key>, groups.<group>.<config key>
        parts = [*parts[:plain], ".".join(parts[plain:])]
    elif head == "base" and parts[0] == "overrides":
        parts = ["overrides", ".".join(parts[1:])]
    for part in parts[:-1]:
        if not isinstance(node, dict):
            raise SpecError([f"--set {key}: {part!r} is inside a value that is not a mapping"])
        node = node.setdefault(part, {})
    if not isinstance(node, dict) or not parts[-1]:
        raise SpecError([f"--set {key}: not a path into the spec (e.g. budget.steps=200, grid.moe.heads=[2,3])"])
    node[parts[-1]] = value


def load_spec_with(spec_arg: str | Path, sets: Sequence[str] = (), name: str | None = None,
                   say: Callable[[str], None] | None = None) -> SweepSpec:
    """The spec ``spec_arg`` with ``sets`` applied and validated; renamed to ``name``, or to
    :func:`override_name` when the overrides change its points (``say`` is told so)."""
    from mhmoe.sweep.plan import plan

    path, data = read_spec_data(spec_arg)
    if not sets and name is None:
        return parse_spec(data, path=path)
    changed = apply_sets(data, sets)
    spec = parse_spec(changed, path=path)
    if name is None and sets:
        try:
            unchanged = {p.config_hash for p in plan(parse_spec(data, path=path)).points}
        except Exception:  # noqa: BLE001 - the file alone does not plan: the overrides made the points
            unchanged = set()
        if {p.config_hash for p in plan(spec).points} != unchanged:
            name = override_name(spec.name, sets)
            if say is not None:
                say(f"sweep {spec.name}: --set changes the points, so they form the study {name} "
                    "(pass --name to choose it)")
    if name is not None:
        spec = parse_spec({**changed, "name": name}, path=path)
    return spec


def override_name(name: str, sets: Sequence[str]) -> str:
    """The study name of ``name`` with ``sets`` applied: stable for the same overrides in any order."""
    digest = hashlib.sha256(json.dumps(sorted(sets)).encode()).hexdigest()[:8]
    return f"{name}.{digest}"


__all__ = ["apply_sets", "load_spec_with", "override_name"]
