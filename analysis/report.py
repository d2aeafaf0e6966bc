"""``mhmoe report``: one sweep -> figures, tables, CSVs and an index, written to ``reports/<sweep>/``.

Every output is named ``<sweep>__<what>.<ext>``. A manifest lists what the last run
wrote, so a rerun first removes exactly those files: a figure that is now skipped does not linger,
and nothing else in the folder is touched.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd

from analysis import figures, ladder, tables
from analysis.checks import missing_notes
from analysis.frame import METRIC, PARAM, MissingData, baseline_point, finished, points, primary_val_set, val_sets
from analysis.load import find_parent_run, load_histories, load_runs, log_files_to, run_param, run_tag
from analysis.ordering import check_ordering
from analysis.report_index import IndexInfo, write_index
from analysis.stats import aggregate, paired_differences
from analysis.style import safe_name, save
from analysis.verdict import report_verdict
from mhmoe.tracking import names
from mhmoe.tracking.provenance import REPORTS_DIR

MANIFEST = ".report-manifest"
REPORT_ARTIFACT_DIR = "report"
PAPER_TABLES = ("T1", "T2", "T3", "T4", "T5")


@dataclass(frozen=True)
class SweepRef:
    """The sweep a report is about (``mhmoe report`` builds it from the spec)."""

    name: str
    """Sweep name: the ``mhmoe.sweep`` tag of its runs."""
    spec_path: Path
    """The spec file, copied into the report."""
    tracking_uri: str | None = None
    """The spec's MLflow store (None = the default store)."""
    grid_axes: tuple[str, ...] = ()
    """The spec's grid keys: each that varies gets its figure (:data:`analysis.fig_sweep.FIGURES`)."""


@dataclass
class Outputs:
    """What a report wrote and what it skipped, in the order the index shows it."""

    out_dir: Path
    prefix: str
    files: list[Path] = field(default_factory=list)
    figures: list[tuple[str, str, list[Path]]] = field(default_factory=list)  # (stem, caption, files)
    tables: list[tuple[tables.Table, list[Path]]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def path(self, what: str, ext: str) -> Path:
        return self.out_dir / f"{self.prefix}{what}.{ext}"

    def write_text(self, what: str, ext: str, text: str) -> Path:
        p = self.path(what, ext)
        p.write_text(text)
        self.files.append(p)
        return p

    def write_csv(self, what: str, frame: pd.DataFrame) -> Path:
        p = self.path(what, "csv")
        frame.to_csv(p, index=False)
        self.files.append(p)
        return p


def clean_previous(out_dir: Path) -> None:
    """Delete the files the previous report listed in its manifest (ours only)."""
    manifest = out_dir / MANIFEST
    if not manifest.is_file():
        return
    for name in manifest.read_text().splitlines():
        target = out_dir / name
        if name and "/" not in name and target.is_file():
            target.unlink()
    manifest.unlink()


def _figure(out: Outputs, stem: str, caption: str | Callable[[], str], draw: Callable) -> None:
    """Draw and save one figure; ``caption`` may be a callable, evaluated once the figure exists."""
    try:
        fig = draw()
        text = caption() if callable(caption) else caption
    except MissingData as reason:
        out.skipped.append(f"figure `{stem}` skipped: {reason}")
        return
    paths = save(fig, out.out_dir, out.prefix + stem)
    out.files += paths
    out.figures.append((stem, text, paths))


def write_figures(out: Outputs, runs: pd.DataFrame, agg: pd.DataFrame, val_set: str | None, tracking_uri: str,
                  grid_axes: tuple[str, ...] = ()) -> None:
    """Every registered figure (:func:`analysis.figures.registered`), in its place."""
    entries = figures.registered()
    keys = figures.history_keys(entries, runs)
    histories = load_histories(finished(runs), keys, tracking_uri) if val_set and keys else pd.DataFrame()
    inputs = figures.FigureInputs(runs, agg, val_set, tracking_uri, histories, grid_axes)
    for entry in entries:
        for stem, given in entry.instances(inputs):
            drawn = len(out.figures)
            _figure(out, stem, partial(entry.caption, given), partial(entry.draw, given))
            if len(out.figures) > drawn:
                out.skipped += entry.notes(given)


def write_ladder(out: Outputs, runs: pd.DataFrame, val_set: str | None) -> list[str]:
    """The token-budget ladder (figure, CSVs); its plain-word lines for the index. Nothing for one budget."""
    if not val_set or len(ladder.rungs(runs)) < 2:
        return []
    deltas = ladder.ladder_deltas(runs, val_set)
    fits = ladder.trend(deltas)
    out.write_csv("ladder", deltas.drop(columns=["seed_deltas", "order"], errors="ignore"))
    out.write_csv("ladder_trend", fits.drop(columns=["order"], errors="ignore"))
    _figure(out, "ladder", ladder.caption(deltas, val_set), lambda: ladder.plot_ladder(deltas, fits, val_set))
    return ladder.summary_lines(deltas, fits)


def write_tables(out: Outputs, runs: pd.DataFrame, agg: pd.DataFrame) -> None:
    sets = val_sets(runs)
    if not sets or finished(runs).empty:
        out.skipped.append("perplexity tables skipped: no finished run with a val/<set>/ppl metric")
        return
    pts = points(runs)
    built = [tables.summary_table(agg, sets)]
    for t in PAPER_TABLES:
        table = tables.paper_table(agg, pts, t, sets)
        if table is None:
            out.skipped.append(f"paper {t} layout skipped: no point of the sweep matches a row of it")
        else:
            built.append(table)
    for table in built:
        paths = [out.write_text(table.key, "md", tables.to_markdown(table)),
                 out.write_text(table.key, "tex", tables.to_latex(table))]
        out.tables.append((table, paths))


def differences(runs: pd.DataFrame) -> pd.DataFrame:
    """Every point minus the full-precision SMoE baseline (else the first point), per set, in nats."""
    pts = points(runs)
    if pts.empty:
        return pd.DataFrame()
    baseline = baseline_point(pts)
    frames = [paired_differences(runs, names.val_metric(s, "ppl"), baseline, log=True) for s in val_sets(runs)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def verdict_rules(parent: str | None, tracking_uri: str) -> dict | None:
    """The comparison pairs, seed schedule, margin and tuning the sweep ran with (its parent run's tag)."""
    text = run_tag(parent, names.TAG_VERDICT_RULES, tracking_uri) if parent else None
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def tuning_trials(tune_runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per tuning run: its label (replicate, trial, seed), status, tuned values and held-out score."""
    if tune_runs.empty:
        return pd.DataFrame()
    labels = tune_runs[f"tags/{names.TAG_POINT}"].astype(str)
    scores = [c for c in tune_runs.columns if c.startswith(METRIC + "val/holdout/")]
    tuned = [PARAM + k for k in keys if PARAM + k in tune_runs.columns]
    frame = pd.DataFrame({"run": labels, "status": tune_runs["status"], "seed": tune_runs["seed"]})
    for c in [*scores, *tuned]:
        frame[c.split("/", 1)[1]] = tune_runs[c]
    return frame.sort_values("run").reset_index(drop=True)


def sweep_metric(runs: pd.DataFrame, parent: str | None, tracking_uri: str) -> str | None:
    """The metric the sweep optimised: stored on its parent run at plan time.

    Runs from before it was stored (or without a parent run) get the one default,
    :func:`mhmoe.tracking.names.default_metric` of the sets in ``data.val_sets`` order.
    """
    stored = run_param(parent, names.PARAM_SWEEP_METRIC, tracking_uri) if parent else None
    if names.parse_val_metric(stored) is not None:
        return stored
    sets = val_sets(runs)
    return names.default_metric(sets) if sets else None


def choose_val_set(runs: pd.DataFrame, explicit: str | None, metric: str | None, notes: list[str]) -> str | None:
    """The ordering/figure set: the caller's (must exist), else the set of the sweep's metric."""
    sets = val_sets(runs)
    if explicit is not None and explicit not in sets:
        raise MissingData(f"validation set {explicit!r} is not in the sweep (it has {sets})")
    parsed = names.parse_val_metric(metric)
    from_metric = parsed[0] if parsed else None
    if explicit is None and from_metric is not None and from_metric not in sets:
        notes.append(f"the sweep's metric set {from_metric!r} was not logged; using the default set instead.")
        from_metric = None
    try:
        return primary_val_set(runs, explicit or from_metric)
    except MissingData as reason:
        notes.append(f"no ordering check and no perplexity figures: {reason}.")
        return None


def write_report(
    sweep_ref: SweepRef,
    out_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    *,
    val_set: str | None = None,
    command: str = "",
    log_artifacts: bool = True,
    say: Callable[[str], None] = lambda line: None,
) -> Outputs:
    """Build the whole report of ``sweep_ref``'s sweep; returns what was written.

    The tracking URI is ``tracking_uri``, else the spec's, else the default store; the ordering
    check uses ``val_set``, else the set of the sweep's metric (:func:`sweep_metric`).
    Raises MissingData when the sweep has no trial runs at all (nothing to report).
    """
    spec_path, sweep = sweep_ref.spec_path, sweep_ref.name
    say(f"loading the runs of sweep {sweep!r}")
    runs = load_runs(sweep, tracking_uri or sweep_ref.tracking_uri)
    tracking_uri = runs.attrs["tracking_uri"]
    if runs.empty:
        raise MissingData(f"no runs tagged {names.TAG_SWEEP}={sweep!r}, {names.TAG_ROLE}=trial in {tracking_uri}")
    notes = missing_notes(runs)
    parent = find_parent_run(sweep, tracking_uri)
    metric = sweep_metric(runs, parent, tracking_uri)
    chosen_set = choose_val_set(runs, val_set, metric, notes)
    out_dir = Path(out_dir) if out_dir is not None else Path(REPORTS_DIR) / safe_name(sweep)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_previous(out_dir)
    out = Outputs(out_dir, safe_name(sweep) + "__")

    say(f"{len(runs)} runs ({len(finished(runs))} finished); statistics and tables")
    ladder_lines = write_ladder(out, runs, chosen_set)
    every_run = runs
    budgets = ladder.rungs(runs)
    if len(budgets) > 1:  # everything else compares variants at one budget: the largest
        runs = ladder.at_rung(runs, budgets[-1])
        notes.append(f"this sweep is a token-budget ladder ({', '.join(f'{b:,.0f}' for b in budgets)} tokens); "
                     f"every table and figure except the ladder uses the largest budget, {budgets[-1]:,.0f} tokens.")
    agg = aggregate(runs)
    out.write_csv("aggregates", agg)
    out.write_csv("runs", runs[["run_id", "run_name", "status", "label", "point", "seed", "variant", "family",
                                *[c for c in runs.columns if c.startswith((PARAM, METRIC))]]])
    out.write_csv("differences", differences(runs))
    rules = verdict_rules(parent, tracking_uri) or {}
    verdict, verdict_note = (report_verdict(every_run, metric, rules) if metric
                             else (pd.DataFrame(), "The sweep logged no validation metric."))
    out.write_csv("verdict", verdict)
    tuning = tuning_trials(load_runs(sweep, tracking_uri, role=names.ROLE_TUNE), rules.get("tuned_keys") or [])
    if not tuning.empty:
        out.write_csv("tuning", tuning)
    ordering = check_ordering(runs, chosen_set) if chosen_set and len(finished(runs)) else pd.DataFrame()
    out.write_csv("ordering", ordering)
    write_tables(out, runs, agg)
    say("figures (reads each run's curves and routing arrays from MLflow)")
    write_figures(out, runs, agg, chosen_set, tracking_uri, sweep_ref.grid_axes)

    spec_copy = out_dir / f"{out.prefix}spec{spec_path.suffix or '.yaml'}"
    shutil.copyfile(spec_path, spec_copy)
    out.files.append(spec_copy)
    runs_command = run_tag(parent, names.TAG_COMMAND, tracking_uri) if parent else None
    info = IndexInfo(sweep=sweep, command=command, tracking_uri=tracking_uri, spec=spec_copy.name,
                     parent_run_id=parent, val_set=chosen_set, notes=notes, runs_command=runs_command,
                     ladder=ladder_lines, metric=metric, verdict=verdict, verdict_note=verdict_note, tuning=tuning)
    out.files += write_index(out, every_run, ordering, info)
    (out_dir / MANIFEST).write_text("\n".join(sorted({p.name for p in out.files})) + "\n")
    if log_artifacts and parent:
        say(f"logging the report to the sweep's MLflow parent run {parent}")
        log_files_to(parent, out.files, REPORT_ARTIFACT_DIR, tracking_uri)
    return out
