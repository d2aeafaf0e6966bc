"""The ``mhmoe`` lm-eval model in bfloat16 and float16, every variant, and ``batch_size=auto``.

Untrained debug-size checkpoints (tests/evaluation/untrained.py): CPU half-precision matmuls are slow,
so the models are tiny and the requests a few tokens.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from mhmoe.config.variants import ROUTER_NAMES
from mhmoe.evaluation.lm_adapter import CPU_AUTO_BATCH_SIZE, MHMoELM
from mhmoe.evaluation.local_tasks import render_local_tasks
from tests.evaluation.untrained import VARIANTS, write_untrained_checkpoint

TEXT = "KING. Good morrow, cousins; the night was long"
ROUTED = [name for name, overrides in VARIANTS.items() if overrides["model.ffn"] != "dense"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """(variant, router) -> checkpoint: every variant with every router (dense has none)."""
    folder = tmp_path_factory.mktemp("untrained")
    made = {}
    for variant, overrides in VARIANTS.items():
        for router in ROUTER_NAMES if variant in ROUTED else ["-"]:
            extra = {} if router == "-" else {"moe.router": router}
            made[variant, router] = write_untrained_checkpoint(folder / f"{variant}-{router}.ckpt",
                                                               {**overrides, **extra})
    return made


def scores(lm: MHMoELM) -> list[float]:
    tokens = lm.tok_encode(TEXT)
    requests = [(None, tokens[:4], tokens[4:10]), (None, tokens[:7], tokens[7:9])]
    return [logprob for logprob, _ in lm._loglikelihood_tokens(requests, disable_tqdm=True)]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_and_router_scores_in_half_precision(variant: str, dtype: str,
                                                           checkpoints: dict[tuple[str, str], Path]) -> None:
    for (name, router), checkpoint in checkpoints.items():
        if name != variant:
            continue
        full = scores(MHMoELM(pretrained=str(checkpoint), batch_size=2))
        lm = MHMoELM(pretrained=str(checkpoint), batch_size=2, dtype=dtype)
        assert next(lm.net.parameters()).dtype == getattr(torch, dtype)
        half = scores(lm)
        assert all(math.isfinite(s) for s in half), (router, half)
        # BitNet re-rounds weights and activations in half precision: a few levels move, not the scale.
        assert half == pytest.approx(full, rel=0.02 if variant == "bitnet" else 0.005), (router, half, full)


def test_an_unknown_dtype_names_the_choices(checkpoints: dict[tuple[str, str], Path]) -> None:
    with pytest.raises(ValueError, match="choose one of float32, bfloat16, float16"):
        MHMoELM(pretrained=str(checkpoints["dense", "-"]), dtype="float64")


def test_batch_size_auto_is_accepted_as_lm_eval_writes_it(checkpoints: dict[tuple[str, str], Path]) -> None:
    smoe = str(checkpoints["smoe", ROUTER_NAMES[0]])
    assert MHMoELM(pretrained=smoe, batch_size="auto").batch_size == CPU_AUTO_BATCH_SIZE
    assert MHMoELM(pretrained=smoe, batch_size="auto:4").batch_size == CPU_AUTO_BATCH_SIZE
    assert MHMoELM(pretrained=smoe, batch_size="auto", max_batch_size=2).batch_size == 2
    # Capacity routing at eval still runs each request alone.
    assert MHMoELM(pretrained=str(checkpoints["capacity", ROUTER_NAMES[0]]), batch_size="auto").batch_size == 1
    # Through lm-eval, as `mhmoe lm-eval --batch_size auto` passes it.
    manager = TaskManager(include_path=str(render_local_tasks()), include_defaults=False)
    results = simple_evaluate(model="mhmoe", model_args=f"pretrained={smoe}", tasks=["mhmoe_mc"],
                              task_manager=manager, limit=2, batch_size="auto", log_samples=False)
    assert 0.0 <= results["results"]["mhmoe_mc"]["acc,none"] <= 1.0
