"""Gradient accumulation: B sequences in one pass vs 4 micro-batches of B/4 (train.micro_batch_size)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
import torch.nn.functional as F

from mhmoe.config.base import ConfigError
from mhmoe.config.run import resolve_run_config
from mhmoe.data.datamodule import train_sample_rows
from mhmoe.model import Transformer
from mhmoe.training.request import TrainRequest
from mhmoe.training.runner import train
from tests.model.fixtures import arch, tiny_model, tiny_moe

B, T, MICRO = 8, 16, 2


def _grads(net: Transformer, inputs: torch.Tensor, targets: torch.Tensor, micro: int) -> tuple[dict, float, list]:
    """Gradient of the accumulated objective (Lightning's: each micro-batch loss / accumulate)."""
    net.zero_grad()
    accumulate = len(inputs) // micro
    total, lbs = 0.0, []
    for chunk_in, chunk_tg in zip(inputs.split(micro), targets.split(micro)):
        out = net(chunk_in)
        loss = F.cross_entropy(out.logits.flatten(0, 1), chunk_tg.flatten()) + out.aux_loss
        (loss / accumulate).backward()
        total += loss.item() / accumulate
        lbs.append(out.lb_loss.detach())
    return {n: p.grad.clone() for n, p in net.named_parameters()}, total, lbs


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 61, (B, T + 1), generator=g)
    return idx[:, :-1], idx[:, 1:]


def test_accumulated_gradients_equal_the_full_batch_without_aux_loss() -> None:
    torch.manual_seed(0)
    net = Transformer(arch(tiny_model(), tiny_moe(aux_loss_coef=0.0, capacity_mode="dropless")))
    inputs, targets = _batch()
    full, full_loss, _ = _grads(net, inputs, targets, B)
    micro, micro_loss, _ = _grads(net, inputs, targets, MICRO)
    assert micro_loss == pytest.approx(full_loss, abs=1e-5)
    for name in full:
        torch.testing.assert_close(micro[name], full[name], atol=1e-6, rtol=1e-4, msg=name)


def test_with_aux_loss_the_difference_is_the_per_micro_batch_aux_definition() -> None:
    """The load-balancing loss is a product of batch means, so the mean over micro-batches of it is
    not it over the batch: the gradient difference is exactly coef * grad(mean_j lb_j - lb_full)."""
    coef = 0.5  # large, so the difference is far above fp32 noise
    torch.manual_seed(0)
    net = Transformer(arch(tiny_model(), tiny_moe(aux_loss_coef=coef, capacity_mode="dropless")))
    inputs, targets = _batch()
    full, full_loss, (full_lb,) = _grads(net, inputs, targets, B)
    micro, micro_loss, micro_lbs = _grads(net, inputs, targets, MICRO)
    aux_gap = coef * (torch.stack(micro_lbs).mean() - full_lb).item()
    assert abs(aux_gap) > 1e-4
    assert micro_loss - full_loss == pytest.approx(aux_gap, abs=1e-5)

    # The same gap from the aux term alone: grad of coef * (mean_j lb(micro_j) - lb(full)).
    net.zero_grad()
    gap = coef * (torch.stack([net(x).lb_loss for x in inputs.split(MICRO)]).mean() - net(inputs).lb_loss)
    gap.backward()
    gap_grads = {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in net.named_parameters()}
    assert any(g.abs().max() > 1e-5 for g in gap_grads.values())
    for name in full:
        torch.testing.assert_close(micro[name] - full[name], gap_grads[name], atol=1e-6, rtol=1e-3, msg=name)


def test_every_step_reads_the_same_samples_whatever_the_micro_size_and_ranks() -> None:
    def step_samples(micro: int, world: int) -> list[list[int]]:
        accumulate = 8 // (micro * world)
        steps = []
        for step in range(3):
            rows = [s for m in range(step * accumulate, (step + 1) * accumulate) for rank in range(world)
                    for s in train_sample_rows(m, batch_size=8, micro_batch_size=micro, world_size=world, rank=rank)]
            assert len(rows) == len(set(rows)) == 8  # disjoint shares, nothing read twice
            steps.append(sorted(rows))
        return steps

    expected = [list(range(s * 8, s * 8 + 8)) for s in range(3)]
    for micro, world in ((8, 1), (2, 1), (1, 1), (4, 2), (1, 2), (1, 4)):
        assert step_samples(micro, world) == expected, (micro, world)


def test_micro_batch_size_must_divide_the_batch() -> None:
    with pytest.raises(ConfigError, match=r"train.micro_batch_size=3 .* must divide train.batch_size=8"):
        resolve_run_config("debug", None, {"train.micro_batch_size": 3})
    with pytest.raises(ConfigError, match=r"train.micro_batch_size=4 x devices x num_nodes=4 must divide"):
        resolve_run_config("debug", None, {"train.micro_batch_size": 4, "train.devices": 4})
    cfg = resolve_run_config("debug", None, {"train.micro_batch_size": 2, "train.devices": 2})
    assert (cfg.train.micro_batch, cfg.train.accumulate_grad_batches) == (2, 2)
    assert resolve_run_config("debug").train.accumulate_grad_batches == 1
    with pytest.raises(ConfigError, match=r"train.strategy=fsdp needs GPUs"):
        resolve_run_config("debug", None, {"train.strategy": "fsdp", "train.accelerator": "cpu"})


def _history(client: mlflow.MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_accumulated_training_matches_one_pass_and_resumes_at_step_boundaries(tmp_path: Path) -> None:
    """aux 0, dropless: 4 x B/4 logs the same optimizer-step mean losses as 1 x B; a micro-batched run
    paused at step 3 and resumed reproduces its uninterrupted curve and validation."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = {"moe.aux_loss_coef": 0.0, "moe.capacity_mode": "dropless", "train.max_steps": 6,
            "train.val_every": 3, "train.log_every": 1, "train.checkpoint_every": 3, "data.val_max_windows": 8}
    one = resolve_run_config("debug", None, base)
    micro = resolve_run_config("debug", None, {**base, "train.micro_batch_size": MICRO})
    client = mlflow.MlflowClient(tracking)
    whole = train(TrainRequest(config=one, tracking_uri=tracking, checkpoint_dir=tmp_path / "one", progress=False))
    acc = train(TrainRequest(config=micro, tracking_uri=tracking, checkpoint_dir=tmp_path / "micro", progress=False))
    curve_one, curve_acc = _history(client, whole.run_id, "train/loss"), _history(client, acc.run_id, "train/loss")
    assert [s for s, _ in curve_acc] == list(range(1, 7))
    for (step, a), (_, b) in zip(curve_one, curve_acc, strict=True):
        assert b == pytest.approx(a, abs=2e-5), f"step {step}"
    assert acc.metrics["val/shakespeare/loss"] == pytest.approx(whole.metrics["val/shakespeare/loss"], abs=1e-4)
    assert [s for s, _ in _history(client, acc.run_id, "val/shakespeare/loss")] == [3, 6]
    # Throughput intervals are whole optimizer steps: the first starts once step 1's 4 micro-batches end.
    assert [s for s, _ in _history(client, acc.run_id, "perf/tokens_per_s")] == [2, 3, 4, 5, 6]

    paused = train(TrainRequest(
        config=micro, tracking_uri=tracking, checkpoint_dir=tmp_path / "split", progress=False, stop_after=3))
    resumed = train(TrainRequest(
        config=micro, tracking_uri=tracking, checkpoint_dir=tmp_path / "split", run_id=paused.run_id, resume=True,
        progress=False))
    assert (resumed.start_step, resumed.final_step) == (3, 6)
    for (step, a), (_, b) in zip(curve_acc, _history(client, paused.run_id, "train/loss"), strict=True):
        assert b == pytest.approx(a, abs=1e-6), f"step {step}"
    assert client.get_run(paused.run_id).info.status == "FINISHED"
    assert [s for s, _ in _history(client, paused.run_id, "perf/tokens_per_s")] == [2, 3, 5, 6]  # resumed at 3
