"""bf16-mixed on CPU, tiny (bf16 matmuls are ~100x slower than fp32 on this CPU)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
import torch.nn.functional as F

from mhmoe.config.run import resolve_run_config
from mhmoe.model import build_model
from mhmoe.training.checkpoint import load_checkpoint
from mhmoe.training.request import TrainRequest
from mhmoe.training.runner import train

TINY = {"train.batch_size": 2, "train.seq_len": 16, "data.val_max_windows": 2}


@pytest.mark.parametrize("ffn, heads", [("smoe", 1), ("mhmoe", 2)])
def test_autocast_keeps_router_and_losses_fp32_and_runs_experts_in_bf16(ffn: str, heads: int) -> None:
    cfg = resolve_run_config("debug", None, {"model.ffn": ffn, "moe.heads": heads, **TINY})
    net = build_model(cfg.architecture)
    dtypes: dict[str, tuple[torch.dtype, torch.dtype]] = {}
    for name, module in net.named_modules():
        if name.endswith(("router", "experts")):
            # The router returns a RouterOutput: its dtype is that of the logits it computed.
            module.register_forward_hook(lambda m, i, o, name=name: dtypes.__setitem__(
                name, (i[0].dtype, getattr(o, "logits_SE", o).dtype)))
    idx = torch.randint(0, cfg.model.vocab_size, (2, 17))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(idx[:, :-1])
        ce = F.cross_entropy(out.logits.flatten(0, 1).float(), idx[:, 1:].flatten())
    assert dtypes["blocks.1.ffn.router"][1] == torch.float32  # logits (and the softmax over them) in fp32
    assert dtypes["blocks.1.ffn.experts"][1] == torch.bfloat16  # computed in bf16, SMoE (fp32 input) too
    stats = out.routing[1]
    assert stats.aux_loss.dtype == stats.z_loss.dtype == out.aux_loss.dtype == ce.dtype == torch.float32
    assert out.logits.dtype == torch.bfloat16


def test_bf16_mixed_training_keeps_fp32_weights_and_optimizer_state(tmp_path: Path) -> None:
    cfg = resolve_run_config("debug", None, {"model.ffn": "mhmoe", "moe.heads": 2, "train.precision": "bf16-mixed",
                                             "train.max_steps": 2, "train.val_every": 2, "train.log_every": 1,
                                             **TINY})
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train(TrainRequest(config=cfg, tracking_uri=tracking, checkpoint_dir=tmp_path / "ckpt", progress=False))
    run = mlflow.MlflowClient(tracking).get_run(result.run_id)
    assert run.data.params["train.precision_resolved"] == "bf16-mixed"
    assert all(torch.isfinite(torch.tensor(v)) for v in result.metrics.values())
    checkpoint = torch.load(result.checkpoint_path, map_location="cpu", weights_only=False)
    assert {t.dtype for t in checkpoint["state_dict"].values() if t.is_floating_point()} == {torch.float32}
    moments = [t for s in checkpoint["optimizer_states"][0]["state"].values() for k, t in s.items() if k != "step"]
    assert moments and {t.dtype for t in moments} == {torch.float32}
    assert load_checkpoint(result.checkpoint_path).global_step == 2
