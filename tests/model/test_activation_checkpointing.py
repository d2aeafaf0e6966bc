"""train.activation_checkpointing: recomputing each block in backward changes memory, not maths."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mhmoe.model import Transformer
from tests.model.fixtures import arch, tiny_model, tiny_moe


def _step(net: Transformer, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    net.zero_grad()
    out = net(idx[:, :-1])
    loss = F.cross_entropy(out.logits.flatten(0, 1), idx[:, 1:].flatten()) + out.aux_loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}


def test_checkpointed_blocks_give_the_same_loss_and_gradients() -> None:
    torch.manual_seed(0)
    config = arch(tiny_model(n_layers=3, moe_every=1), tiny_moe(capacity_mode="capacity"))
    plain = Transformer(config)
    checkpointed = Transformer(config, activation_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 61, (4, 17), generator=torch.Generator().manual_seed(1))
    loss_a, grads_a = _step(plain, idx)
    loss_b, grads_b = _step(checkpointed, idx)
    assert torch.equal(loss_a, loss_b)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, atol=1e-7, rtol=1e-6, msg=name)


def test_checkpointing_saves_fewer_tensors_for_backward() -> None:
    """Counts the bytes autograd keeps for backward (saved-tensor hooks): with checkpointing only the
    block inputs stay alive, so the forward keeps far less."""
    def saved_bytes(net: Transformer) -> int:
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net(torch.zeros(4, 16, dtype=torch.long))
        return total

    torch.manual_seed(0)
    plain = Transformer(arch(tiny_model(n_layers=3, moe_every=1), tiny_moe()))
    checkpointed = Transformer(arch(tiny_model(n_layers=3, moe_every=1), tiny_moe()), activation_checkpointing=True)
    assert saved_bytes(checkpointed) < saved_bytes(plain) / 2
