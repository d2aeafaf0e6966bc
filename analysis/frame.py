"""The tidy runs frame: one row per run, ``params/...``, ``metrics/...`` and ``tags/...`` columns.

:func:`annotate` adds the columns every plot and table groups by (``family``, ``heads``,
``experts``, ``weight_bits``, ``head_proj``, ``merge_proj``, ``shared``, ``seed``, ``variant``,
``point``, ``label``). It is idempotent and works on a frame with only some params, so tests can
build small frames by hand and real MLflow frames go through the same code.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from mhmoe.config.architecture import FULL_PRECISION_BITS, is_quantized
from mhmoe.config.run import run_config_keys
from mhmoe.config.variants import BASELINE, find_variant, projections_default, routes, variant_label
from mhmoe.tracking import names
from mhmoe.tracking.display import FAMILY_NAMES, model_name  # noqa: F401 - analysis names

PARAM = "params/"
METRIC = "metrics/"
TAG = "tags/"
FINISHED = "FINISHED"
# Paper column each of our validation-set names stands in for (v2 section 3: RedPajama, Wiki, C4).
PAPER_SET_ALIASES = {"redpajama": "RedPajama", "wiki": "Wiki", "wikitext": "Wiki", "wikitext2": "Wiki", "c4": "C4"}
_VAL_PPL = re.compile(r"^metrics/val/(?P<set>[^/]+)/ppl$")
_MISSING_TEXT = ("", "None", "none", "null", "nan", "NaN")
_BOOL_TEXT = {"True": True, "False": False, "true": True, "false": False}
# Short names for params that tell apart points sharing one variant label (``mhmoe-h2 E=16``).
_SHORT = {"moe.num_experts": "E", "moe.top_k": "k", "moe.expert_d_ff": "dff", "moe.heads": "h"}
# How a run executes, not what it trains: workers may set these per process.
_RUNTIME_KEYS = ("train.accelerator", "train.num_threads", "train.compile", "train.peak_flops",
                 "train.checkpoint_every", "train.log_every", "train.routing_every", "train.log_checkpoint",
                 "train.system_metrics")


BASELINE_VARIANT = variant_label(BASELINE)
"""Label of the point differences are taken against: the paper's (and the matcher's) SMoE baseline."""


class MissingData(LookupError):
    """The sweep lacks what a figure or table needs; the report notes the reason and goes on."""


def col(name: str) -> str:
    """Param column for a dotted config key (``moe.heads`` -> ``params/moe.heads``)."""
    return PARAM + name


def coerce_param(values: pd.Series) -> pd.Series:
    """MLflow stores params as text: numeric-looking columns become numbers, True/False booleans.

    ``"None"`` (and empty text) becomes a missing value, because the config logs ``None`` for
    "variant default" (``moe.head_proj``); :func:`annotate` resolves those defaults.
    """
    text = values.astype("object")
    missing = text.isna() | text.isin(_MISSING_TEXT)
    present = text[~missing]
    if present.empty:
        return pd.Series([None] * len(text), index=text.index, dtype="object")
    if present.isin(list(_BOOL_TEXT)).all():
        return text.map(lambda v: _BOOL_TEXT.get(v) if isinstance(v, str) else v).where(~missing, None)
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.isna().any():
        return text.where(~missing, None)
    out = pd.to_numeric(text.where(~missing), errors="coerce")
    whole = np.isfinite(out[~missing]) & (out[~missing] % 1 == 0)
    if not missing.any() and whole.all():
        return out.astype("int64")
    return out.astype("float64")


def val_sets(runs: pd.DataFrame) -> list[str]:
    """Validation-set names that have a ``val/<set>/ppl`` metric, in the config's report order.

    ``data.val_sets`` lists the sets "in report order" (entries ``name`` or ``name=source``);
    sets not listed there follow in column order.
    """
    logged = [m.group("set") for c in runs.columns if (m := _VAL_PPL.match(c))]
    configured = []
    if col("data.val_sets") in runs.columns:
        for text in runs[col("data.val_sets")].dropna():
            configured = [str(e).split("=", 1)[0].strip() for e in _as_list(text)]
            break
    return [s for s in configured if s in logged] + [s for s in logged if s not in configured]


def _as_list(value: Any) -> list:
    """A list param as MLflow logged it (``"['shakespeare', 'pydoc']"``) back to a list."""
    if isinstance(value, (list, tuple)):
        return list(value)
    try:
        parsed = ast.literal_eval(str(value))
    except (ValueError, SyntaxError):
        return [value]
    return list(parsed) if isinstance(parsed, (list, tuple)) else [parsed]


def ppl_col(val_set: str) -> str:
    return METRIC + names.val_metric(val_set, "ppl")


def primary_val_set(runs: pd.DataFrame, prefer: str | None = None) -> str:
    """The set the ordering check uses: ``prefer``, else a RedPajama-named set, else the first in report order."""
    sets = val_sets(runs)
    if prefer is not None:
        if prefer not in sets:
            raise MissingData(f"validation set {prefer!r} not in the sweep (have {sets})")
        return prefer
    if not sets:
        raise MissingData("no val/<set>/ppl metric in any run")
    for s in sets:
        if PAPER_SET_ALIASES.get(s.lower()) == "RedPajama":
            return s
    return sets[0]


def _param(runs: pd.DataFrame, key: str, default: Any = None) -> pd.Series:
    name = col(key)
    if name in runs.columns:
        return runs[name]
    return pd.Series([default] * len(runs), index=runs.index, dtype="object")


def _tag(runs: pd.DataFrame, key: str) -> pd.Series:
    name = TAG + key
    if name in runs.columns:
        return runs[name].where(runs[name].notna() & (runs[name] != ""), None)
    return pd.Series([None] * len(runs), index=runs.index, dtype="object")


def _resolve_proj(explicit: pd.Series, family: pd.Series) -> pd.Series:
    # None means "variant default" (mhmoe.config.variants: on for mhmoe, off otherwise).
    default = family.map(projections_default)
    values = [bool(d) if e is None or (isinstance(e, float) and np.isnan(e)) else bool(e)
              for e, d in zip(explicit, default)]
    return pd.Series(values, index=explicit.index, dtype="bool")


def _numeric(series: pd.Series, default: float) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").fillna(default).astype("float64")


def _variant_from_params(row: pd.Series) -> str:
    """The variant's label rule (:mod:`mhmoe.config.variants`) plus the ``+w<bits>`` suffix of RunConfig."""
    label = variant_label(row["family"], heads=int(row["heads"]), head_proj=bool(row["head_proj"]),
                          merge_proj=bool(row["merge_proj"]), shared=bool(row["shared"]))
    if is_quantized(row["weight_bits"]):
        label += f"+w{row['weight_bits']:g}"
    return label


def config_columns(runs: pd.DataFrame, *, drop: tuple[str, ...] = ()) -> list[str]:
    """Param columns that define a grid point: RunConfig keys, minus seeds and run-time knobs.

    Real runs also log measured values (``perf.peak_flops``), derived ``budget.*`` numbers and a
    second copy of the config (``config/model/ffn``); none of those may split seeds of one point.
    ``drop`` removes more key prefixes (``("quant.",)`` pairs a BitNet run with its 16-bit twin).
    """
    keys = [k for k in run_config_keys() if k.rsplit(".", 1)[-1] != "seed" and k != "seed"
            and k not in _RUNTIME_KEYS and not k.startswith(drop)]
    return [col(k) for k in keys if col(k) in runs.columns]


def _point_hash(runs: pd.DataFrame) -> pd.Series:
    cols = config_columns(runs)
    text = row_text(runs, cols) if cols else runs["variant"].map(str)
    return text.map(lambda t: "p" + hashlib.sha256(t.encode()).hexdigest()[:10])


def row_text(frame: pd.DataFrame, cols: list[str]) -> pd.Series:
    """``"v1|v2|..."`` per row (str() of each value, missing ones included) for hashing."""
    return pd.Series(["|".join(map(str, values)) for values in frame[cols].itertuples(index=False)],
                     index=frame.index, dtype="object")


def strip_seed(point_label: str) -> str:
    """A grid point across seeds: the sweep's point tag names one trial (``mhmoe-h2/seed=1``),
    so the seed coordinate is dropped (``mhmoe-h2``)."""
    parts = [p for p in str(point_label).split("/") if p.split("=", 1)[0].rsplit(".", 1)[-1] != "seed"]
    return "/".join(parts) or "(base)"


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float, np.integer, np.floating)) else str(value)


def _labels(runs: pd.DataFrame) -> pd.Series:
    """Variant label, extended with the params that differ when several points share it."""
    labels = runs["variant"].astype(str).copy()
    cols = config_columns(runs)
    for variant, group in runs.groupby("variant", sort=False):
        points = group.drop_duplicates("point")
        if len(points) < 2:
            continue
        differing = [c for c in cols if points[c].map(str).nunique() > 1]
        differing.sort(key=lambda c: (c[len(PARAM):] not in _SHORT, c))
        for point, prow in points.set_index("point").iterrows():
            if differing:
                extra = " ".join(f"{_SHORT.get(c[len(PARAM):], c[len(PARAM):])}={_fmt(prow[c])}" for c in differing[:2])
            else:
                extra = str(point)
            labels.loc[group.index[group["point"] == point]] = f"{variant} {extra}"
    return labels


def annotate(runs: pd.DataFrame) -> pd.DataFrame:
    """Add the grouping columns (see module docstring); returns a new frame."""
    out = runs.copy()
    if "status" not in out.columns:
        out["status"] = FINISHED
    out["family"] = _param(out, "model.ffn").fillna("unknown").astype(str)
    out["heads"] = _numeric(_param(out, "moe.heads"), 1.0).astype("int64")
    moe = out["family"].map(routes).astype(bool)
    out["experts"] = pd.to_numeric(_param(out, "moe.num_experts"), errors="coerce").where(moe)
    out["top_k"] = pd.to_numeric(_param(out, "moe.top_k"), errors="coerce").where(moe)
    out["weight_bits"] = _numeric(_param(out, "quant.weight_bits"), FULL_PRECISION_BITS)
    out["head_proj"] = _resolve_proj(_param(out, "moe.head_proj"), out["family"]) & moe
    out["merge_proj"] = _resolve_proj(_param(out, "moe.merge_proj"), out["family"]) & moe
    out["shared"] = (_numeric(_param(out, "moe.shared_expert_d_ff"), 0.0) > 0) & moe
    seed = _tag(out, names.TAG_SEED).fillna(_param(out, "seed"))
    out["seed"] = pd.to_numeric(seed, errors="coerce")
    variant = _tag(out, names.TAG_VARIANT)
    computed = out.apply(_variant_from_params, axis=1) if len(out) else pd.Series(dtype="object")
    out["variant"] = variant.fillna(computed).astype(str) if len(out) else variant
    point = _tag(out, names.TAG_POINT).map(strip_seed, na_action="ignore")
    out["point"] = point.fillna(_point_hash(out)).astype(str) if len(out) else point
    out["label"] = _labels(out) if len(out) else out["variant"]
    out["paper_model"] = [_paper_model(f, h) for f, h in zip(out["family"], out["heads"])]
    out["tokens"] = _training_tokens(out)
    return out


def _training_tokens(runs: pd.DataFrame) -> pd.Series:
    """Tokens a run was trained for (its budget): max_steps x batch_size x seq_len; NaN where not logged."""
    cols = ("train.max_steps", "train.batch_size", "train.seq_len")
    factors = [pd.to_numeric(_param(runs, key), errors="coerce") for key in cols]
    return (factors[0] * factors[1] * factors[2]).astype("float64")


def _paper_model(family: str, heads: int) -> str | None:
    """The paper's model a point stands for (the paper ran MH-MoE with 2 and 3 heads only)."""
    entry = find_variant(family)
    if entry is None or not entry.in_paper:
        return None
    return entry.paper_name(heads) if not entry.multi_head or entry.is_paper_model(heads) else None


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == FINISHED]


def points(runs: pd.DataFrame, extra: Iterable[str] = ()) -> pd.DataFrame:
    """One row per grid point with its grouping columns and seed count (finished runs)."""
    keys = ["point", "label", "variant", "family", "heads", "experts", "top_k", "weight_bits",
            "head_proj", "merge_proj", "shared", "paper_model", *extra]
    done = finished(runs)
    first = done.drop_duplicates("point").set_index("point")[keys[1:]]
    first["n_runs"] = done.groupby("point").size()
    return first.reset_index()


def baseline_point(pts: pd.DataFrame) -> str:
    """The point differences are taken against: the SMoE variant (full precision, no modifiers;
    the paper's baseline), else the first point. ``pts`` is :func:`points` output."""
    base = pts[pts["variant"] == BASELINE_VARIANT]
    return str(base.iloc[0]["point"] if len(base) else pts.iloc[0]["point"])
