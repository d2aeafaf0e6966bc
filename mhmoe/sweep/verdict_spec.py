"""The spec sections that turn a grid into a verdict: ``compare``, ``seeds``, ``margin`` and ``tune``.

::

    compare: [[smoe, mhmoe-h3], [dense, smoe]]   # baseline first; default: every group vs the SMoE group
    seeds: {start: 3, max: 10}                   # seeds 0..start-1 first, one more per unresolved comparison
    margin: 0.01                                 # |difference| inside this counts as "equivalent"
    tune:                                        # optional: tune per group before the comparison
      keys: {optim.lr: [3e-4, 3e-2, log]}        # tpe: [low, high] or [low, high, log]; grid: [v1, v2, ...]
      sampler: tpe                               # or grid
      trials: 8                                  # sampler trials per group
      budget: 0.25                               # fraction of the comparison's training steps
      seeds: [100]                               # tuning seeds, disjoint from the comparison's
      holdout: 0.1                               # share of training documents held out to score tuning

The stopping rule and its intervals are :mod:`analysis.sequential`; the scheduling that acts on
them is :mod:`mhmoe.sweep.scheduler`. Parsing here only checks structure; group names are checked
against the spec's groups by :func:`check_against_groups`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from analysis.sequential import DesignError, SeedSchedule

TUNE_KEYS = ("keys", "sampler", "trials", "budget", "seeds", "holdout", "parallel", "set")
Sampler = Literal["tpe", "grid"]
TUNE_SET = "holdout"
"""The validation set tuning trials are scored on: documents held out of their training corpus."""
NOT_TUNABLE_PREFIXES = ("model.", "moe.", "quant.", "data.", "train.max_steps", "train.devices", "train.num_nodes")
"""Keys that define what is compared (the variant, its size, its data, its length), not how it is trained."""
MAX_TUNE_TRIALS = 1000


@dataclass(frozen=True, kw_only=True)
class TuneKey:
    """One tuned config key: a TPE range or a list of grid values."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    values: tuple[float, ...] = ()
    """Grid sampler choices (empty for TPE)."""


@dataclass(frozen=True, kw_only=True)
class TuneSpec:
    """Per-group hyper-parameter search that runs before the comparison points are queued."""

    keys: tuple[TuneKey, ...]
    sampler: Sampler = "tpe"
    trials: int = 8
    budget: float = 0.25
    seeds: tuple[int, ...] = (100,)
    holdout: float = 0.1
    parallel: int = 2
    """Tuning trials of one group in flight at once (TPE proposes the next from the finished ones)."""

    @property
    def grid_size(self) -> int:
        return math.prod(len(k.values) for k in self.keys) if self.sampler == "grid" else 0

    @property
    def effective_trials(self) -> int:
        return min(self.trials, self.grid_size) if self.sampler == "grid" else self.trials

    def describe(self) -> str:
        keys = ", ".join(k.key for k in self.keys)
        return (f"{keys} tuned per variant: {self.effective_trials} {self.sampler} trials x {self.budget:g} budget "
                f"on {self.holdout:.0%} of the training documents held out, seeds {list(self.seeds)}")

    def to_dict(self) -> dict[str, Any]:
        return {"keys": [{"key": k.key, "low": k.low, "high": k.high, "log": k.log, "values": list(k.values)}
                         for k in self.keys],
                "sampler": self.sampler, "trials": self.trials, "budget": self.budget, "seeds": list(self.seeds),
                "holdout": self.holdout, "parallel": self.parallel}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuneSpec:
        keys = tuple(TuneKey(key=k["key"], low=k["low"], high=k["high"], log=k["log"], values=tuple(k["values"]))
                     for k in data["keys"])
        return cls(keys=keys, sampler=data["sampler"], trials=data["trials"], budget=data["budget"],
                   seeds=tuple(data["seeds"]), holdout=data["holdout"], parallel=data["parallel"])


@dataclass(frozen=True, kw_only=True)
class VerdictSpec:
    """Which comparisons decide the sweep, on how many seeds, and what counts as equivalent."""

    compare: tuple[tuple[str, str], ...] = ()
    """(baseline group, variant group) pairs; empty = every group against the SMoE baseline group."""
    seeds: SeedSchedule | None = None
    """None: the grid's fixed seeds, read once (a single look)."""
    margin: float | None = None
    """Equivalence margin on the compared difference (nats for perplexity)."""
    tune: TuneSpec | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            return float(value)  # YAML reads 3e-4 as a string
        except ValueError:
            return None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def parse_seeds(value: Any, errors: list[str]) -> SeedSchedule | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"start", "max"}:
        errors.append(f"seeds={value!r} must be a mapping {{start: N, max: M}} (e.g. {{start: 3, max: 10}})")
        return None
    try:
        return SeedSchedule(start=value.get("start", 3), max=value.get("max", 10))
    except DesignError as err:
        errors.append(str(err))
        return None


def parse_compare(value: Any, errors: list[str]) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    ok = isinstance(value, list) and value and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(g, str) for g in p) for p in value)
    if not ok:
        errors.append(f"compare={value!r} must be a list of [baseline group, variant group] pairs, "
                      "e.g. [[smoe, mhmoe-h3]]")
        return ()
    pairs = tuple((a, b) for a, b in value)
    for i, (a, b) in enumerate(pairs):
        if a == b:
            errors.append(f"compare[{i}]: {a!r} is compared with itself")
    return pairs


def parse_margin(value: Any, errors: list[str]) -> float | None:
    if value is None:
        return None
    number = _number(value)
    if number is None or number <= 0:
        errors.append(f"margin={value!r} must be a number > 0 (the equivalence margin, in nats for perplexity)")
        return None
    return number


def _tune_key(key: str, spec: Any, sampler: str, types: dict[str, Any], errors: list[str]) -> TuneKey | None:
    where = f"tune.keys.{key}"
    if key not in types:
        from mhmoe.config.base import unknown_key

        errors.append(f"{where}: {unknown_key(key, types, what='config key')}")
        return None
    if key == "seed" or key.startswith(NOT_TUNABLE_PREFIXES):
        errors.append(f"{where}: {key} defines what is compared, not how it is trained; tune optim.* or "
                      "train.* keys such as optim.lr, optim.warmup_steps, optim.weight_decay")
        return None
    if types[key] not in (int, float):
        errors.append(f"{where}: {key} is not a number ({types[key]!r}); only numeric keys can be tuned")
        return None
    if not isinstance(spec, list) or not spec:
        errors.append(f"{where}={spec!r} must be a list: [low, high] or [low, high, log] for tpe, values for grid")
        return None
    if sampler == "grid":
        values = [_number(v) for v in spec]
        if any(v is None for v in values) or len(set(values)) != len(values):
            errors.append(f"{where}={spec!r} must be distinct numbers (the grid sampler's values)")
            return None
        return TuneKey(key=key, values=tuple(types[key](v) for v in values if v is not None))
    log = len(spec) == 3 and spec[2] == "log"
    if len(spec) not in (2, 3) or (len(spec) == 3 and not log):
        errors.append(f"{where}={spec!r} must be [low, high] or [low, high, log] for the tpe sampler")
        return None
    low, high = _number(spec[0]), _number(spec[1])
    if low is None or high is None:
        errors.append(f"{where}={spec!r}: low and high must be numbers")
        return None
    if low >= high:
        errors.append(f"{where}: low {spec[0]!r} must be < high {spec[1]!r}")
        return None
    if log and low <= 0:
        errors.append(f"{where}: a log range needs low > 0, got {spec[0]!r}")
        return None
    return TuneKey(key=key, low=low, high=high, log=log)


def parse_tune(value: Any, errors: list[str], key_types: dict[str, Any],
               reported_sets: tuple[str, ...] | None) -> TuneSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.append(f"tune must be a mapping with keys {list(TUNE_KEYS)}")
        return None
    before = len(errors)
    for key in value:
        if key not in TUNE_KEYS:
            errors.append(f"unknown key tune.{key}; valid keys: {list(TUNE_KEYS)}")
    sampler = value.get("sampler", "tpe")
    if sampler not in get_args(Sampler):
        errors.append(f"tune.sampler={sampler!r} is not allowed; choose one of {list(get_args(Sampler))}")
        sampler = "tpe"
    keys_data = value.get("keys")
    from mhmoe.config.base import dotted_from_nested

    if not isinstance(keys_data, dict) or not keys_data:
        errors.append("tune.keys must map config keys to ranges, e.g. {optim.lr: [3e-4, 3e-2, log]}")
        keys_data = {}
    flat: dict[str, Any] = {}
    for k, v in keys_data.items():  # a range is a list, so only nested mappings need flattening
        flat.update(dotted_from_nested(v, f"{k}.") if isinstance(v, dict) else {k: v})
    keys = [_tune_key(k, v, sampler, key_types, errors) for k, v in flat.items()]
    trials = value.get("trials", 8)
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_TUNE_TRIALS:
        errors.append(f"tune.trials={trials!r} must be an integer from 1 to {MAX_TUNE_TRIALS}")
    budget = _number(value.get("budget", 0.25))
    if budget is None or not 0 < budget <= 1:
        errors.append(f"tune.budget={value.get('budget')!r} must be a fraction of the training steps in (0, 1]")
    seeds = value.get("seeds", [100])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        errors.append(f"tune.seeds={seeds!r} must be a list of distinct integers >= 0")
    holdout = _number(value.get("holdout", 0.1))
    if holdout is None or not 0 < holdout < 0.5:
        errors.append(f"tune.holdout={value.get('holdout')!r} must be a fraction in (0, 0.5): the share of "
                      "training documents held out to score tuning trials")
    parallel = value.get("parallel", 2)
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        errors.append(f"tune.parallel={parallel!r} must be an integer >= 1")
    tune_set = value.get("set", TUNE_SET)
    if tune_set != TUNE_SET:
        sets = list(reported_sets or ())
        reported = f" is a reported validation set {sets}" if tune_set in sets else ""
        errors.append(f"tune.set={tune_set!r}{reported or ' is not allowed'}: tuning is scored only on "
                      f"{TUNE_SET!r} (documents held out of the tuning trials' training corpus), never on "
                      "a reported validation set")
    if len(errors) > before:
        return None
    return TuneSpec(keys=tuple(k for k in keys if k is not None), sampler=sampler, trials=trials,
                    budget=float(budget or 0.25), seeds=tuple(seeds), holdout=float(holdout or 0.1), parallel=parallel)


def check_against_groups(verdict: VerdictSpec, group_names: list[str], grid_keys: list[str],
                         errors: list[str]) -> None:
    """Group names in ``compare`` exist; a seed schedule does not fight a ``seed`` grid axis; tuning
    seeds stay out of the comparison's."""
    for i, pair in enumerate(verdict.compare):
        for name in pair:
            if name not in group_names:
                errors.append(f"compare[{i}]: {name!r} is not a group; groups: {group_names}")
    if verdict.seeds is not None and "seed" in grid_keys:
        errors.append("seeds and the grid axis 'seed' both set the seeds; keep one (seeds: {start, max} "
                      "adds seeds until the comparisons resolve)")
    if verdict.tune is not None and verdict.seeds is not None:
        clash = sorted(s for s in verdict.tune.seeds if s < verdict.seeds.max)
        if clash:
            errors.append(f"tune.seeds {clash} are also comparison seeds (0..{verdict.seeds.max - 1}); "
                          "tuning must not share a seed with what it tunes for, e.g. tune.seeds: [100]")


__all__ = ["TUNE_SET", "TuneKey", "TuneSpec", "VerdictSpec", "check_against_groups", "parse_compare",
           "parse_margin", "parse_seeds", "parse_tune"]
