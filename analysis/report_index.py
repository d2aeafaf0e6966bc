"""The content of a report's ``index.md`` / ``index.html``: provenance, notes, ordering, tables, figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from analysis import tables
from analysis.index import (
    Block,
    Bullets,
    Code,
    Heading,
    Image,
    Markdown,
    Para,
    blocks_from_markdown,
    render_html,
    render_markdown,
)
from analysis.stats import BOOTSTRAP_FROM, POWER, RESOLVE_MIN_N, interval_text
from analysis.verdict import display_frame, headline, unit
from mhmoe.tracking import names
from mhmoe.tracking.provenance import git_commit


@dataclass(frozen=True)
class IndexInfo:
    sweep: str
    command: str
    tracking_uri: str
    spec: str
    parent_run_id: str | None
    val_set: str | None
    notes: list[str] = field(default_factory=list)
    runs_command: str | None = None
    """The command that produced the sweep's runs (tag mhmoe.command of the parent run)."""
    ladder: list[str] = field(default_factory=list)
    """Plain-word lines of the token-budget ladder (:func:`analysis.ladder.summary_lines`); empty for one budget."""
    metric: str | None = None
    """The sweep's metric (what the verdict compares)."""
    verdict: pd.DataFrame = field(default_factory=pd.DataFrame)
    """:func:`analysis.verdict.report_verdict`'s table."""
    verdict_note: str = ""
    tuning: pd.DataFrame = field(default_factory=pd.DataFrame)
    """:func:`analysis.report.tuning_trials`: one row per tuning run (empty without tuning)."""


def verdict_blocks(out, info: IndexInfo) -> list[Block]:
    """Who wins, first: the headline, the verdict table, how it was decided, and the tuning runs."""
    blocks: list[Block] = [Heading("Verdict")]
    if info.verdict.empty or not info.metric:
        return [*blocks, Para("No comparison could be made: " + (info.verdict_note or "no finished runs"))]
    shown = display_frame(info.verdict, info.metric)
    log = "ln " if unit(info.metric) else ""
    blocks += [Para(f"**{headline(info.verdict)}**"), Markdown(tables.markdown_table(shown), shown),
               Para(f"{info.verdict_note} Δ = {log}{info.metric}(variant) − {log}{info.metric}(baseline): "
                    f"negative is lower; {_links([out.path('verdict', 'csv')])}")]
    if not info.tuning.empty:
        blocks += [Para(f"{len(info.tuning)} tuning runs, scored on documents held out of their own training "
                        f"corpus (never on a reported validation set): {_links([out.path('tuning', 'csv')])}")]
    return blocks


FINDINGS = "findings.md"
"""A researcher's reading of the results, kept in the report folder: regenerating the report keeps
it (it is not in the manifest) and shows it near the top of the index, marked as written by hand."""


def findings_blocks(out_dir: Path) -> list[Block]:
    """The report folder's hand-written findings as index blocks, or nothing when there are none."""
    path = out_dir / FINDINGS
    if not path.is_file():
        return []
    blocks = blocks_from_markdown(path.read_text())
    # Headings in the file sit under this one.
    blocks = [Heading(b.text, max(b.level, 3)) if isinstance(b, Heading) else b for b in blocks]
    return [Heading("Findings"),
            Para(f"Written by hand from the results below ([{FINDINGS}]({FINDINGS}), kept when the report is "
                 "regenerated); everything after this section is generated from the runs."), *blocks]


def _duration(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def wall_time(runs: pd.DataFrame) -> str | None:
    """First trial start to last trial end, next to the trial time summed over runs (workers run
    trials side by side, so the two differ by about the number of workers)."""
    if "start_time" not in runs or "end_time" not in runs:
        return None
    spans = (runs["end_time"] - runs["start_time"]).dropna()
    if spans.empty:
        return None
    span = (runs["end_time"].max() - runs["start_time"].min()).total_seconds()
    return (f"wall time: {_duration(span)} from the first trial's start to the last one's end "
            f"({_duration(spans.dt.total_seconds().sum())} of trial time summed over {len(spans)} runs)")


def run_commits(runs: pd.DataFrame) -> str | None:
    """The commits the runs trained at (their ``mhmoe.git_commit`` tag), with run counts when several."""
    column = f"tags/{names.TAG_GIT_COMMIT}"
    if column not in runs:
        return None
    counts = runs[column].dropna().value_counts()
    if counts.empty:
        return None
    if len(counts) == 1:
        return f"git commit of the runs: `{counts.index[0]}`"
    return "git commits of the runs: " + ", ".join(f"`{sha}` ({n} runs)" for sha, n in counts.items())


def _delta(r: pd.Series) -> str:
    if pd.isna(r.get("delta")):
        return tables.MISSING
    if pd.isna(r.get("ci_low")):
        return f"{r['delta']:+.4f}"
    return f"{r['delta']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"


def _seeds(n: float) -> str:
    return tables.MISSING if pd.isna(n) else "> 1000" if n == float("inf") else f"{n:g}"


def ordering_display(ordering: pd.DataFrame) -> pd.DataFrame:
    """The checkable comparisons as display strings (the CSV also lists the ones not run)."""
    if ordering.empty:
        return pd.DataFrame()
    rows = []
    for _, r in ordering[ordering["delta"].notna()].iterrows():
        ours = (tables.MISSING if pd.isna(r["worse_label"]) or pd.isna(r["better_label"])
                else f"{r['worse_label']} > {r['better_label']}")
        seeds = tables.MISSING if pd.isna(r.get("n_worse")) else f"{int(r['n_worse'])}/{int(r['n_better'])}" + (
            " paired" if r.get("paired") is True else "")
        rows.append({"paper": r["table"], "paper order (worse > better)": f"{r['worse']} > {r['better']}",
                     "paper Δ": f"{r['paper_delta']:+.4f}", "our runs": ours, "our Δ [95% CI]": _delta(r),
                     "seeds": seeds, "interval": r.get("method") or tables.MISSING,
                     f"seeds for paper Δ (95% / {POWER:.0%} power)":
                         f"{_seeds(r.get('seeds_needed'))} / {_seeds(r.get('seeds_needed_power'))}",
                     "verdict": r["verdict"]})
    return pd.DataFrame(rows).set_index("paper") if rows else pd.DataFrame()


def _not_run(ordering: pd.DataFrame) -> str:
    if ordering.empty:
        return ""
    skipped = ordering[ordering["delta"].isna()]
    if skipped.empty:
        return ""
    counts = ", ".join(f"{t}: {n}" for t, n in skipped.groupby("table").size().items())
    return (f"Not checkable (variants not in the sweep, or no values): {len(skipped)} comparisons ({counts}); "
            "see the CSV.")


def _pair(r: pd.Series) -> str:
    order = "as the paper does" if r["agrees"] else "the other way round"
    return (f"{r['table']} {r['worse']} > {r['better']}: our runs order it {order}, Δ {_delta(r)} nats "
            f"(n = {int(min(r['n_worse'], r['n_better']))}{' paired' if r['paired'] is True else ''})")


def _noise(r: pd.Series) -> str:
    return (_pair(r) + f"; {_seeds(r['seeds_needed'])} seeds would resolve the paper's Δ of {r['paper_delta']:+.4f} "
            f"at this spread ({_seeds(r['seeds_needed_power'])} for {POWER:.0%} power)")


def summary_blocks(ordering: pd.DataFrame) -> list[Block]:
    """In plain words: how many comparisons were checked, with which n and interval, which are
    resolved (and whether they agree) and which are within noise (and how many seeds would do)."""
    if ordering.empty or "agrees" not in ordering:
        return [Para("No comparison could be made.")]
    checked = ordering[ordering["delta"].notna()]
    if checked.empty:
        return [Para(f"None of the {len(ordering)} comparisons of the paper's orderings is checkable here: no pair of "
                     "them has finished runs with values in this sweep.")]
    resolved = checked[checked["resolved"] == True]  # noqa: E712 (object column with None)
    noise = checked[checked["resolved"] != True]  # noqa: E712
    ns = pd.concat([checked["n_worse"], checked["n_better"]])
    paired = bool((checked["paired"] == True).all())  # noqa: E712
    agree = int((resolved["agrees"] == True).sum())  # noqa: E712
    val_set = checked["val_set"].iloc[0]
    blocks: list[Block] = [Para(
        f"{len(checked)} of {len(ordering)} comparisons of the paper's orderings are checkable here, with "
        f"{interval_text(ns, paired=paired)}. Δ = ln ppl(worse) − ln ppl(better) in nats on the `{val_set}` set: "
        "positive means our runs order the pair as the paper does. A comparison is resolved only with "
        f"{RESOLVE_MIN_N}+ seeds and a CI that excludes zero; otherwise it is within noise, whatever the sign "
        f"of Δ. The interval is Student's t below {BOOTSTRAP_FROM} seeds and the BCa bootstrap from "
        f"{BOOTSTRAP_FROM}.")]
    blocks.append(Para(f"Resolved: {len(resolved)} ({agree} agree with the paper, {len(resolved) - agree} "
                       "disagree)." if len(resolved) else "Resolved: none."))
    if len(resolved):
        blocks.append(Bullets([_pair(r) for _, r in resolved.iterrows()]))
    blocks.append(Para(f"Within noise: {len(noise)}." if len(noise) else "Within noise: none."))
    if len(noise):
        blocks.append(Bullets([_noise(r) for _, r in noise.iterrows()]))
    return blocks


def _provenance(info: IndexInfo, runs: pd.DataFrame) -> list[Block]:
    done = int((runs["status"] == "FINISHED").sum())
    parent = (f"`{info.parent_run_id}` (this folder is logged there under `report/`)" if info.parent_run_id
              else "none found (tag mhmoe.role=sweep); nothing logged to MLflow")
    runs_command: list[Block] = ([Para("The runs were produced by:"), Code(info.runs_command)] if info.runs_command
                                 else [])
    return [
        Heading(f"Report: sweep `{info.sweep}`", 1),
        Para(f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by:"),
        Code(info.command or "(called from Python)"),
        *runs_command,
        Bullets([f"sweep spec: [{info.spec}]({info.spec})",
                 f"git commit: `{git_commit(describe=True)}` (this report's code)",
                 *filter(None, [run_commits(runs)]),
                 f"tracking URI: `{info.tracking_uri}`", f"sweep parent run: {parent}",
                 f"runs: {len(runs)} ({done} finished)",
                 *filter(None, [wall_time(runs)]),
                 f"validation set for the ordering check: `{info.val_set}`" if info.val_set else
                 "validation set for the ordering check: none"]),
    ]


def _links(paths: list[Path]) -> str:
    return " · ".join(f"[{p.name}]({p.name})" for p in paths)


def build_blocks(out, runs: pd.DataFrame, ordering: pd.DataFrame, info: IndexInfo) -> list[Block]:
    """Every block of the index, in order (``out`` is :class:`analysis.report.Outputs`)."""
    title, *provenance = _provenance(info, runs)
    blocks = [title, *verdict_blocks(out, info), *provenance, *findings_blocks(out.out_dir)]
    blocks += [Heading("What is missing"), Bullets(info.notes + out.skipped)]
    if info.ladder:
        blocks += [Heading("Token-budget ladder"),
                   Para("How each variant's difference to SMoE moves with the training budget (Δ = ln ppl(SMoE) − "
                        "ln ppl(variant) in nats, positive: the variant is better); see the ladder figure and "
                        f"{_links([out.path('ladder', 'csv'), out.path('ladder_trend', 'csv')])}."),
                   Bullets(info.ladder)]
    blocks += [Heading("Ordering check against the paper"), *summary_blocks(ordering)]
    shown = ordering_display(ordering)
    if not shown.empty:
        blocks.append(Markdown(tables.markdown_table(shown), shown))
    blocks.append(Para(" ".join(filter(None, [_not_run(ordering), _links([out.path("ordering", "csv")])]))))
    blocks.append(Heading("Tables"))
    blocks.append(Para("Cells: mean ± half-width of the 95% CI over seeds (each caption names the interval and n; "
                       f"bounds in the aggregates CSV); bold: {tables.BOLD_RULE}; paper columns are "
                       "the published numbers; `run`: our point's label in the CSVs."))
    for table, paths in out.tables:
        blocks += [Heading(table.title, 3), Para(table.caption),
                   Markdown(tables.to_markdown(table), table.cells, table.best)]
        blocks.append(Para(_links(paths) + ("".join(f"\n\n{n}" for n in table.notes) if table.notes else "")))
    blocks.append(Heading("Figures"))
    for _stem, caption, paths in out.figures:
        png = next(p for p in paths if p.suffix == ".png")
        blocks.append(Image(png.name, caption, tuple(p.name for p in paths)))
    blocks.append(Heading("Data"))
    data = [out.path(w, "csv") for w in ("aggregates", "differences", "ordering", "runs")]
    blocks.append(Bullets([f"[{p.name}]({p.name})" for p in data]))
    blocks.append(Heading("Runs"))
    listing = runs[["run_id", "label", "seed", "status"]].assign(
        seed=lambda f: [tables.MISSING if pd.isna(s) else f"{s:g}" for s in f["seed"]]).set_index("run_id")
    blocks.append(Markdown(tables.markdown_table(listing), listing))
    return blocks


def write_index(out, runs: pd.DataFrame, ordering: pd.DataFrame, info: IndexInfo) -> list[Path]:
    """Write ``index.md`` and ``index.html`` into the report folder."""
    blocks = build_blocks(out, runs, ordering, info)
    md, page = out.out_dir / "index.md", out.out_dir / "index.html"
    md.write_text(render_markdown(blocks))
    page.write_text(render_html(blocks, f"mhmoe report: {info.sweep}", embed_from=out.out_dir))
    return [md, page]
