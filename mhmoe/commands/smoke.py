"""``mhmoe smoke``: the budget table of a preset, then one forward/backward of every variant.

A fast end-to-end check of an install (seconds on a CPU): every paper variant derived by the
matching solver is built (full precision and BitNet), run forward and backward on random
tokens, and its routing telemetry is printed.
"""

from __future__ import annotations

import time

import torch

from mhmoe.commands.bad_input import Parser, refuses_bad_input
from mhmoe.config.architecture import FULL_PRECISION_BITS, Architecture, QuantConfig
from mhmoe.config.base import apply_overrides, to_dict
from mhmoe.config.flags import int_at_least
from mhmoe.model import build_model
from mhmoe.sizing.matching import paper_variants, preset_configs
from mhmoe.sizing.table import budget_table, format_table


@refuses_bad_input("mhmoe smoke")
def main(argv: list[str]) -> int:
    parser = Parser(prog="mhmoe smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="debug", help="budget table and model sizes (default debug)")
    parser.add_argument("--tokens", type=int_at_least(2), default=64, help="sequence length of the random batch")
    args = parser.parse_args(argv)
    print(format_table(budget_table(args.preset)))
    model_cfg, moe_cfg = preset_configs(args.preset)
    print(f"\nforward/backward, preset {args.preset}, batch 2 x {args.tokens} random tokens:")
    torch.manual_seed(0)
    for name, overrides in paper_variants(args.preset).items():
        for bits in (FULL_PRECISION_BITS, 1.58):
            model = apply_overrides(type(model_cfg), to_dict(model_cfg), overrides.get("model", {}))
            moe = apply_overrides(type(moe_cfg), to_dict(moe_cfg), overrides.get("moe", {}))
            quant = QuantConfig(weight_bits=bits)
            net = build_model(Architecture(model=model, moe=moe, quant=quant))
            idx = torch.randint(0, model.vocab_size, (2, min(args.tokens, model.max_seq_len)))
            start = time.perf_counter()
            out = net(idx)
            loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), idx[:, 1:].flatten())
            (loss + out.aux_loss).backward()
            ms = (time.perf_counter() - start) * 1e3
            routing = " ".join(
                f"L{b}: imb {s.load_imbalance.item():.2f} div {s.divergence.item():.2f}" for b, s in out.routing.items()
            )
            label = f"{name}{' +BitNet' if quant.enabled else ''}"
            print(f"  {label:<20} loss {loss.item():.3f}  {ms:7.1f} ms  {routing}")
    return 0
