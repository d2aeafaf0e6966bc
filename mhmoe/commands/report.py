"""``mhmoe report SPEC``: figures, tables and an index for one sweep (see :mod:`analysis.report`)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from mhmoe.commands.bad_input import Parser, refuse, refuses_bad_input
from mhmoe.config.base import ConfigError
from mhmoe.config.flags import folder


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="mhmoe report",
        description="Read a sweep's runs from MLflow and write figures (PNG+PDF), tables (Markdown+LaTeX), "
                    "CSVs, an ordering check against the paper and index.md/index.html.",
    )
    p.add_argument("spec", help="sweep spec YAML, or the name of one in experiments/; its name selects the runs "
                                "tagged mhmoe.sweep=<name>")
    p.add_argument("--name", default=None, help="the sweep's name, when it ran under another name than the "
                                                   "spec's (mhmoe sweep run SPEC --set ... prints it)")
    p.add_argument("--out", type=folder, default=None, help="output folder (default: reports/<sweep>/)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: the spec's tracking_uri, else $MLFLOW_TRACKING_URI, "
                        "else the SQLite store in MHMOE_HOME)")
    p.add_argument("--val-set", default=None,
                   help="validation set for the ordering check (default: the set of the metric the sweep "
                        "optimised, recorded on its parent run)")
    p.add_argument("--no-mlflow-artifacts", action="store_true",
                   help="do not log the report as artifacts of the sweep's parent run")
    return p


def sweep_ref(spec_arg, name: str | None = None):
    """The report's view of a spec (name, file, tracking URI), read by the sweep's own parser.

    ``spec_arg``: a path, a shipped spec's name, or a :class:`~mhmoe.sweep.spec.SweepSpec` already loaded
    (with its ``--set`` overrides); ``name`` overrides the spec's name.
    """
    from analysis.report import SweepRef
    from mhmoe.sweep.spec import SweepSpec, load_spec

    spec = spec_arg if isinstance(spec_arg, SweepSpec) else load_spec(spec_arg)
    return SweepRef(name=name or spec.name, spec_path=Path(spec.path or str(spec_arg)), tracking_uri=spec.tracking_uri,
                    grid_axes=tuple(axis.key for axis in spec.grid))


def report_sweep(spec_arg, *, name: str | None = None, out: str | Path | None = None,
                 tracking_uri: str | None = None, val_set: str | None = None, command: str = "",
                 log_artifacts: bool = True) -> int:
    """Write the report of the sweep ``spec_arg`` names; returns the exit code (2: nothing to report)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from analysis.frame import MissingData  # lazy: keeps `mhmoe --help` fast
    from analysis.report import write_report
    from mhmoe.store.home import resolve_tracking_uri
    from mhmoe.store.urls import check_tracking_uri, sqlite_file

    ref = sweep_ref(spec_arg, name)
    uri = resolve_tracking_uri(tracking_uri, ref.tracking_uri)
    check_tracking_uri(uri)
    store = sqlite_file(uri)
    if store is not None and not store.is_file():  # opening it would create an empty store
        raise ConfigError(f"no MLflow store at {store}: nothing has run for sweep {ref.name!r} (pass --tracking-uri)")
    try:
        written = write_report(ref, out, tracking_uri, val_set=val_set, command=command,
                               log_artifacts=log_artifacts, say=lambda line: print(f"mhmoe report: {line}", flush=True))
    except MissingData as reason:  # no runs for this sweep, or a --val-set it does not have
        return refuse("mhmoe report", reason)
    print(f"wrote {len(written.files)} files to {written.out_dir}/ (index: {written.out_dir / 'index.md'})")
    for note in written.skipped:
        print(f"  {note}")
    return 0


@refuses_bad_input("mhmoe report")
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    return report_sweep(args.spec, name=args.name, out=args.out, tracking_uri=args.tracking_uri, val_set=args.val_set,
                        command=shlex.join(["mhmoe", "report", *argv]), log_artifacts=not args.no_mlflow_artifacts)
