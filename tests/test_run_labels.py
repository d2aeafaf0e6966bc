"""What MLflow and Optuna show about a run: its paper name, the params that apply, what identifies a point."""

from __future__ import annotations

import pytest

from mhmoe.config.run import resolve_run_config
from mhmoe.tracking.applicable import applicable_params
from mhmoe.tracking.display import display_name


@pytest.mark.parametrize(("overrides", "name"), [
    ({"model.ffn": "dense"}, "Dense"),
    ({"model.ffn": "dense", "quant.weight_bits": 1.58}, "Dense, BitNet b1.58"),
    ({"model.ffn": "fine_grained"}, "Fine-grained SMoE"),
    ({"model.ffn": "mhmoe", "moe.heads": 2}, "MH-MoE (head=2)"),
    ({"model.ffn": "mhmoe", "moe.heads": 2, "moe.head_proj": False}, "MH-MoE (head=2), merge only"),
    ({"model.ffn": "smoe", "moe.shared_expert_d_ff": 32}, "SMoE + shared expert"),
])
def test_display_name_matches_the_report_names(overrides: dict, name: str) -> None:
    import pandas as pd

    from analysis.frame import annotate, coerce_param
    from analysis.style import paper_name

    cfg = resolve_run_config("debug", None, overrides)
    assert display_name(cfg) == name
    logged = pd.DataFrame([{f"params/{k}": str(v) for k, v in cfg.flat().items()}])  # as MLflow stores them
    row = annotate(logged.apply(coerce_param)).iloc[0]
    assert paper_name(row).split(",")[0] == name.split(",")[0]  # the report names it the same way


def test_dense_params_have_no_moe_keys_and_routed_keep_them() -> None:
    dense = resolve_run_config("debug", None, {"model.ffn": "dense"})
    smoe = resolve_run_config("debug", None, {"model.ffn": "smoe"})
    assert not any(k.startswith("moe.") for k in applicable_params(dense.flat(), "dense"))
    assert applicable_params(smoe.flat(), "smoe") == smoe.flat()


def test_uploading_the_checkpoint_is_not_part_of_a_points_identity() -> None:
    hashes = {resolve_run_config("debug", None, {"train.log_checkpoint": flag}).config_hash()
              for flag in (None, True, False)}
    assert len(hashes) == 1
    assert resolve_run_config("debug", None, {"train.max_steps": 41}).config_hash() not in hashes
