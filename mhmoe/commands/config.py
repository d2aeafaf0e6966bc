"""``mhmoe config``: every config key with its type, its value in a preset and what it does."""

from __future__ import annotations

import typing

from mhmoe.commands.bad_input import Parser, refuses_bad_input


def _type_name(annotation: typing.Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("NoneType", "None")


@refuses_bad_input("mhmoe config")
def main(argv: list[str]) -> int:
    from mhmoe.config.base import flatten, key_docs
    from mhmoe.config.presets import PRESETS
    from mhmoe.config.run import RunConfig, resolve_run_config

    parser = Parser(prog="mhmoe config", description="List config keys (what `key=value`, `--config` files and "
                    "sweep specs accept), with their type, their value in a preset and their description.")
    parser.add_argument("prefix", nargs="?", default="", help="show only keys starting with this, e.g. moe or train.")
    parser.add_argument("--preset", default="cpu-small", help=f"whose values to show, one of {sorted(PRESETS)}")
    args = parser.parse_args(argv)
    values = flatten(resolve_run_config(args.preset))
    rows = [(key, _type_name(annotation), repr(values.get(key)), doc)
            for key, annotation, doc in key_docs(RunConfig) if key.startswith(args.prefix)]
    if not rows:
        parser.error(f"no config key starts with {args.prefix!r}; sections: "
                     f"{sorted({key.split('.')[0] for key, *_ in key_docs(RunConfig)})}")
    for key, type_name, value, doc in rows:
        print(f"{key}  ({type_name}; {args.preset}: {value})")
        for line in doc.splitlines() or [""]:
            print(f"    {line}")
    return 0
