"""``mhmoe report SPEC``: figures, tables and an index for one sweep (see :mod:`analysis.report`)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from mhmoe.commands.bad_input import Parser, refuses_bad_input


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="mhmoe report",
        description="Read a sweep's runs from MLflow and write figures (PNG+PDF), tables (Markdown+LaTeX), "
                    "CSVs, an ordering check against the paper and index.md/index.html.",
    )
    p.add_argument("spec", help="sweep spec YAML, or the name of one in experiments/; its name selects the runs "
                                "tagged mhmoe.sweep=<name>")
    p.add_argument("--out", default=None, help="output folder (default: reports/<sweep>/)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: the spec's tracking_uri, else $MLFLOW_TRACKING_URI, "
                        "else the sqlite store in MHMOE_HOME)")
    p.add_argument("--val-set", default=None,
                   help="validation set for the ordering check (default: the set of the spec's metric, "
                        "else the first in report order)")
    p.add_argument("--no-mlflow-artifacts", action="store_true",
                   help="do not log the report as artifacts of the sweep's parent run")
    return p


@refuses_bad_input("mhmoe report")
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from analysis.frame import MissingData  # lazy: keeps `mhmoe --help` fast
    from analysis.report import write_report
    from analysis.spec import read_spec
    from mhmoe.configbase import ConfigError
    from mhmoe.home import default_tracking_uri
    from mhmoe.store_urls import check_tracking_uri, sqlite_file

    try:
        spec = read_spec(args.spec)
    except FileNotFoundError as err:  # read_spec without the sweep package
        raise ConfigError(f"spec {args.spec!r}: {err}") from None
    uri = args.tracking_uri or spec.tracking_uri or default_tracking_uri()
    check_tracking_uri(uri)
    store = sqlite_file(uri)
    if store is not None and not store.is_file():  # opening it would create an empty store
        print(f"mhmoe report: no MLflow store at {store}: nothing has run for sweep {spec.name!r} "
              "(pass --tracking-uri)", file=sys.stderr)
        return 1
    try:
        out = write_report(spec, args.out, args.tracking_uri, val_set=args.val_set,
                           command=shlex.join(["mhmoe", "report", *argv]),
                           log_artifacts=not args.no_mlflow_artifacts,
                           say=lambda line: print(f"mhmoe report: {line}", flush=True))
    except MissingData as reason:
        print(f"mhmoe report: {reason}", file=sys.stderr)
        return 1
    print(f"wrote {len(out.files)} files to {out.out_dir}/ (index: {out.out_dir / 'index.md'})")
    for note in out.skipped:
        print(f"  {note}")
    return 0
