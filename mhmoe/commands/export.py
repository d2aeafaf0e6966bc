"""``mhmoe export CKPT DIR``: a checkpoint as a Hugging Face model folder (:mod:`mhmoe.export.hf`)."""

from __future__ import annotations

import argparse

from mhmoe.commands.bad_input import Parser, refuse, refuses_bad_input


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mhmoe export",
        description="Write a checkpoint as a Hugging Face model folder: config.json, model.safetensors (weights "
                    "only), the tokenizer and modeling_mhmoe.py, loadable with AutoModelForCausalLM.from_pretrained("
                    "DIR, trust_remote_code=True) where mhmoe is installed, and by lm_eval --model hf.",
    )
    parser.add_argument("checkpoint", help="an mhmoe checkpoint (.ckpt) written by mhmoe train")
    parser.add_argument("out_dir", metavar="DIR", help="the folder to write (must not exist, or be empty)")
    parser.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")
    return parser


@refuses_bad_input("mhmoe export")
def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from mhmoe.export.hf import ExportError, export_checkpoint

    try:
        out = export_checkpoint(args.checkpoint, args.out_dir, force=args.force)
    except ExportError as err:
        return refuse("mhmoe export", err)
    print(f"wrote {out} (load it with AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True))")
    return 0
