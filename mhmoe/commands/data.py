"""``mhmoe data prepare``: the tokenizer and token streams a run of this config uses, built once, in parallel.

A training run or sweep trial of the same config finds them in MHMOE_HOME and does not rebuild them; one
started meanwhile waits for this preparer (a file lock) instead of repeating the work.
"""

from __future__ import annotations

import os
import time

from mhmoe.commands.bad_input import Parser, refuses_bad_input
from mhmoe.config.flags import int_at_least
from mhmoe.config.presets import PRESETS


def build_parser() -> Parser:
    parser = Parser(prog="mhmoe data", description="Prepare a config's data caches before training.")
    parser.add_argument("action", choices=["prepare"],
                        help="prepare: train the tokenizer and tokenize the corpus and validation sets")
    return parser


def build_prepare_parser() -> Parser:
    parser = Parser(prog="mhmoe data prepare",
                    description="Build the tokenizer and token streams `mhmoe train` of this config uses. "
                                "Config = preset, then --config FILE, then key=value overrides.")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. data.corpus=DIR")
    parser.add_argument("--preset", default="cpu-small", help=f"one of {sorted(PRESETS)} (default cpu-small)")
    parser.add_argument("--config", help="YAML file of config sections merged over the preset")
    parser.add_argument("--workers", type=int_at_least(1), default=os.cpu_count() or 1,
                        help="tokenizing processes (default: one per core)")
    return parser


@refuses_bad_input("mhmoe data")
def main(argv: list[str]) -> int:
    build_parser().parse_args(argv[:1])  # the action (one for now); --help and a wrong one exit here
    args = build_prepare_parser().parse_intermixed_args(argv[1:])
    from mhmoe.config.run import parse_overrides, resolve_run_config
    from mhmoe.data.sources import check_local_paths, train_source, train_stream_sources, val_sources
    from mhmoe.data.tokenizer import build_tokenizer, check_tokenizer_file
    from mhmoe.data.tokens import prepare_stream

    cfg = resolve_run_config(args.preset, args.config, parse_overrides(args.overrides))
    check_local_paths(cfg.data)  # before anything is created
    check_tokenizer_file(cfg.data)
    started = time.perf_counter()
    train = train_source(cfg.data)
    tokenizer = build_tokenizer(cfg.data, train)
    print(f"tokenizer: {tokenizer.spec} ({tokenizer.vocab_size} ids, {time.perf_counter() - started:.1f} s)")
    streams = train_stream_sources(cfg.data) if cfg.data.train_weights() is not None else [train]
    corpus = {"corpus" if len(streams) == 1 else f"corpus[{i}]": source for i, source in enumerate(streams)}
    for name, source in {**corpus, **{f"val {k}": v for k, v in val_sources(cfg.data).items()}}.items():
        began = time.perf_counter()
        done = prepare_stream(source, tokenizer, workers=args.workers)
        what = ("already prepared" if done.tokenized == 0 else
                f"tokenized {done.tokenized} shard(s), reused {done.reused}, {time.perf_counter() - began:.1f} s")
        print(f"{name}: {done.tokens:,} tokens in {done.path} ({what})")
    return 0
