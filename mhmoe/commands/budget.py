"""``mhmoe budget``: parameter and FLOP budget of the v2 Table 1 variants of a preset (:mod:`mhmoe.sizing.table`)."""

from __future__ import annotations

import argparse
import json
import sys

from mhmoe.commands.bad_input import Parser, refuses_bad_input
from mhmoe.config.flags import int_at_least
from mhmoe.config.presets import PRESETS
from mhmoe.sizing.table import budget_table, format_table


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mhmoe budget",
        description="Parameter and FLOP budget of dense, SMoE, fine-grained SMoE and MH-MoE h=2/h=3, each "
        "derived from the preset's SMoE baseline (docs/MATCHING.md), with and without BitNet b1.58.",
    )
    parser.add_argument("--preset", default="paper-v2",
                        help=f"preset name, one of {sorted(PRESETS)} (default paper-v2)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    parser.add_argument("--seq-len", type=int_at_least(1), default=None,
                        help="sequence length for attention-score FLOPs (default: the preset's train.seq_len)")
    return parser


@refuses_bad_input("mhmoe budget")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = budget_table(args.preset, seq_len=args.seq_len)  # an unknown preset is a ConfigError
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
