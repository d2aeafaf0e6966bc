"""The whole report on the synthetic store: files, image sizes, table values, index, MLflow, degradation."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg
from mlflow import MlflowClient

from analysis.load import load_runs
from analysis.stats import aggregate
from analysis.style import DOUBLE, DPI, SINGLE
from analysis.tables import format_cell
from mhmoe import cli
from tests.analysis.analysis_synthetic import SYNTH_COMMIT

FIGURES = {  # stem -> width in inches (two-column paper sizes)
    "val_curves": DOUBLE, "axis_sweeps": DOUBLE, "heads_experts": SINGLE, "expert_load": DOUBLE,
    "routing_stats": DOUBLE, "bitnet_gap": SINGLE, "ppl_vs_flops": SINGLE,
}
TABLES = ("summary", "table1", "table3", "table4", "table5")  # no shared-expert runs: no Table 2
CSVS = ("aggregates", "runs", "differences", "ordering", "verdict")


def expected_files(prefix: str = "synth__") -> set[str]:
    names = {"index.md", "index.html", f"{prefix}spec.yaml"}
    names |= {f"{prefix}{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")}
    names |= {f"{prefix}{t}.{ext}" for t in TABLES for ext in ("md", "tex")}
    return names | {f"{prefix}{c}.csv" for c in CSVS}


def test_report_writes_every_listed_file(synth_report):
    out = synth_report.out_dir
    written = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert written == expected_files()
    assert {p.name for p in synth_report.files} == written
    index = (out / "index.md").read_text()
    for name in written - {"index.md"}:
        assert f"({name})" in index or name == "index.html", f"index.md does not link {name}"
    page = (out / "index.html").read_text()
    # Self-contained (MLflow's artifact viewer resolves no relative link): each figure is embedded.
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"', page)
    assert len(embedded) == page.count("<img ") == len(FIGURES)
    pngs = {base64.b64decode(data) for data, _ in embedded}
    assert pngs == {(out / f"synth__{stem}.png").read_bytes() for stem in FIGURES}
    assert synth_report.skipped == ["paper T2 layout skipped: no point of the sweep matches a row of it"]


@pytest.mark.parametrize("stem", sorted(FIGURES))
def test_figures_are_non_empty_images_of_paper_size(synth_report, stem):
    png = synth_report.out_dir / f"synth__{stem}.png"
    pixels = mpimg.imread(png)
    height, width = pixels.shape[:2]
    assert width == round(FIGURES[stem] * DPI)
    assert 1.2 * DPI <= height <= 4.5 * DPI
    ink = (pixels[..., :3] < 0.9).any(axis=-1).mean()  # share of non-white pixels
    assert ink > 0.02, f"{stem} looks empty"
    pdf = (synth_report.out_dir / f"synth__{stem}.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 2000


def _cell_number(cell: str) -> tuple[float, float | None]:
    m = re.match(r"\**(?P<mean>[0-9.]+)(?: ± (?P<half>[0-9.]+))?", cell)
    return float(m["mean"]), (float(m["half"]) if m["half"] else None)


def _md_rows(text: str) -> dict[str, list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header[1:], cells[1:]))
    return rows


def test_table_values_equal_the_aggregates(store, synth_report):
    agg = aggregate(load_runs("synth", store["uri"]))
    ppl = agg[agg["metric"] == "val/shakespeare/ppl"].set_index("label")
    rows = _md_rows((synth_report.out_dir / "synth__table1.md").read_text())
    assert list(rows) == ["Dense", "SMoE", "Fine-grained SMoE", "MH-MoE (head=2)", "MH-MoE (head=3)"]
    for _name, row in rows.items():
        label = row["run"]
        a = ppl.loc[label]
        mean, half = _cell_number(row["shakespeare (ours)"])
        assert mean == pytest.approx(round(a["mean"], 2))
        assert half == pytest.approx(round((a["ci_high"] - a["ci_low"]) / 2, 2))
        assert row["shakespeare (ours)"].strip("*") == format_cell(a["mean"], a["ci_low"], a["ci_high"], a["n"])
    assert rows["MH-MoE (head=3)"]["shakespeare (ours)"].startswith("**")  # best of the column in bold
    assert rows["Dense"]["RedPajama (paper)"] == "12.13" and rows["MH-MoE (head=3)"]["RedPajama (paper)"] == "**10.51**"
    table_numbers = next(t for t, _ in synth_report.tables if t.key == "table1").numbers
    ours = table_numbers[table_numbers["column"] == "shakespeare (ours)"].set_index("label")["mean"]
    for label, mean in ours.items():
        assert mean == ppl.loc[label, "mean"]


def test_aggregates_csv_is_every_aggregated_number(store, synth_report):
    agg = aggregate(load_runs("synth", store["uri"]))
    csv = pd.read_csv(synth_report.out_dir / "synth__aggregates.csv")
    assert len(csv) == len(agg)
    merged = csv.merge(agg, on=["point", "metric"], suffixes=("_csv", ""))
    assert np.allclose(merged["mean_csv"], merged["mean"], equal_nan=True)
    assert np.allclose(merged["ci_low_csv"], merged["ci_low"], equal_nan=True)
    assert {"val/pydoc/ppl", "routing/mean/load_imbalance", "val/tokens"} <= set(csv["metric"])


def test_index_records_provenance_and_ordering(store, synth_report):
    out = synth_report.out_dir
    index = (out / "index.md").read_text()
    assert f"mhmoe report {store['specs'] / 'synth.yaml'} --out {out}" in index
    assert re.search(r"git commit: `([0-9a-f]{40}|unknown)", index)
    assert f"git commit of the runs: `{SYNTH_COMMIT}`" in index  # the runs' tag, not the report's checkout
    for run_id in store["synth"]["trial"] + store["synth"]["failed"]:
        assert run_id in index
    assert "is FAILED: left out of every aggregate" in index
    assert (out / "synth__spec.yaml").read_text() == (store["specs"] / "synth.yaml").read_text()
    ordering = pd.read_csv(out / "synth__ordering.csv")
    t1 = ordering[ordering["table"] == "T1"]
    assert (t1["verdict"] == "agrees").all()  # the synthetic sweep follows the paper's order
    assert ordering.loc[ordering["table"] == "T2", "verdict"].str.startswith("not run").all()
    # in plain words: n and interval, what is resolved, what is within noise and how many seeds would do
    assert ("with 95% Student-t CI of the paired differences (df = n−1), n = 2–3 seeds" in index
            and "Resolved: 7 (7 agree with the paper, 0 disagree)." in index and "Within noise: 1." in index)
    assert re.search(r"- T3 SMoE > MH-MoE \(head=2\): our runs order it as the paper does, .* \(n = 2 paired\); "
                     r"\d+ seeds would resolve the paper's Δ", index)
    assert "Ours: mean ± half-width of the 95% Student-t CI (df = n−1), n = 3 seeds" in index  # table captions


def test_report_is_logged_on_the_parent_run(store, synth_report):
    parent = store["synth"]["parent"][0]
    logged = {Path(a.path).name for a in MlflowClient(store["uri"]).list_artifacts(parent, "report")}
    assert logged == {p.name for p in synth_report.files}
    assert f"`{parent}`" in (synth_report.out_dir / "index.md").read_text()


def test_one_seed_sweep_degrades_gracefully_through_the_cli(store, tmp_path):
    out = tmp_path / "oneseed"
    out.mkdir()
    (out / "notes.txt").write_text("not ours")
    argv = ["report", str(store["specs"] / "oneseed-spec.yaml"), "--out", str(out), "--tracking-uri", store["uri"]]
    assert cli.main(argv) == 0
    first = sorted(p.name for p in out.iterdir())
    index = (out / "index.md").read_text()
    assert "CI unavailable (1 seed) for: mhmoe-h2, smoe" in index
    assert "no routing/mean/* metrics for" in index
    assert "figure `expert_load` skipped: no routing/load_step*.npy artifacts" in index
    assert "figure `routing_stats` skipped" in index
    assert "figure `ppl_vs_flops` skipped" in index and "figure `bitnet_gap` skipped" in index
    assert "figure `axis_sweeps` skipped: no axis varies on its own: MH-MoE heads h: differs only between" in index
    assert "Resolved: none." in index and "agrees, within noise (no CI)" in index
    assert "sweep parent run: none found" in index
    assert "mhmoe report " + " ".join(argv[1:]) in index
    rows = _md_rows((out / "oneseed__table1.md").read_text())
    assert rows["SMoE"]["shakespeare (ours)"].endswith("(1 seed)")
    assert "Ours: mean of n = 1 seed (no interval)" in index
    ordering = pd.read_csv(out / "oneseed__ordering.csv")
    assert set(ordering.loc[ordering["table"] == "T1", "verdict"]) == {"agrees, within noise (no CI)",
                                                                       "not run: Fine-grained SMoE",
                                                                       "not run: Dense", "not run: MH-MoE (head=3)"}
    # Rerun: same files, ours overwritten, a file we never wrote untouched, a stale one of ours removed.
    stale = out / "oneseed__old_figure.png"
    stale.write_bytes(b"x")
    (out / ".report-manifest").write_text((out / ".report-manifest").read_text() + stale.name + "\n")
    assert cli.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == first
    assert (out / "notes.txt").read_text() == "not ours"


def test_sweep_with_only_a_failed_run_still_reports(store, tmp_path):
    out = tmp_path / "allfailed"
    assert cli.main(["report", str(store["specs"] / "allfailed.yaml"), "--out", str(out)]) == 0
    index = (out / "index.md").read_text()
    assert f"run `{store['allfailed']['failed'][0]}` (smoe, seed 3) is FAILED" in index
    assert "perplexity tables skipped" in index and "figure `val_curves` skipped" in index
    assert not list(out.glob("*.png"))


def test_cli_errors(store, tmp_path):
    spec = tmp_path / "ghost.yaml"
    spec.write_text("name: ghost\nbase: {preset: debug}\n")
    assert cli.main(["report", str(spec), "--out", str(tmp_path / "g"), "--tracking-uri", store["uri"]]) == 2
    assert not (tmp_path / "g").exists()
    assert cli.main(["report", str(tmp_path / "missing.yaml")]) == 2
    synth = str(store["specs"] / "synth.yaml")
    assert cli.main(["report", synth, "--out", str(tmp_path / "v"), "--val-set", "nope"]) == 2
    assert not (tmp_path / "v").exists()


def test_the_report_reads_the_metric_the_sweep_stored_on_its_parent_run(synth_runs, tmp_path):
    """The parent run's ``sweep.metric`` picks the report's set; without it, the one default."""
    from analysis.report import choose_val_set, sweep_metric
    from mhmoe.tracking import names

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent = client.create_run(client.create_experiment("e")).info.run_id
    assert sweep_metric(synth_runs, parent, uri) == names.default_metric(["shakespeare", "pydoc"])
    assert sweep_metric(synth_runs, None, uri) == "val/shakespeare/ppl"
    client.log_param(parent, names.PARAM_SWEEP_METRIC, "val/pydoc/loss")
    metric = sweep_metric(synth_runs, parent, uri)
    notes: list[str] = []
    assert metric == "val/pydoc/loss" and choose_val_set(synth_runs, None, metric, notes) == "pydoc" and not notes


def test_hand_written_findings_show_in_the_index_and_survive_a_rerun(store, tmp_path):
    out = tmp_path / "findings"
    out.mkdir()
    findings = ("# What the runs say\n\nSMoE beats dense at every rung:\nthe interval excludes zero.\n\n"
                "- MH-MoE h=3 is within noise\n  of SMoE (see [the CSV](oneseed__ordering.csv)).\n"
                "- `pydoc` disagrees.\n")
    (out / "findings.md").write_text(findings)
    argv = ["report", str(store["specs"] / "oneseed-spec.yaml"), "--out", str(out), "--tracking-uri", store["uri"]]
    assert cli.main(argv) == 0 and cli.main(argv) == 0
    assert (out / "findings.md").read_text() == findings  # not ours to overwrite or clean away
    index = (out / "index.md").read_text()
    head = index[:index.index("## What is missing")]  # near the top: before everything generated
    assert "## Findings" in head and "### What the runs say" in head and "- wall time: " in head
    assert "SMoE beats dense at every rung: the interval excludes zero." in head
    assert "- MH-MoE h=3 is within noise of SMoE (see [the CSV](oneseed__ordering.csv))." in head
    page = (out / "index.html").read_text()
    assert '<li>MH-MoE h=3 is within noise of SMoE (see <a href="oneseed__ordering.csv">the CSV</a>).</li>' in page
    assert "<li><code>pydoc</code> disagrees.</li>" in page


def test_the_index_states_the_sweeps_wall_time(synth_runs):
    from analysis.report_index import wall_time

    runs = synth_runs.copy()
    begin = pd.Timestamp("2026-01-01 10:00")
    runs["start_time"] = [begin + pd.Timedelta(minutes=10 * i) for i in range(len(runs))]
    runs["end_time"] = runs["start_time"] + pd.Timedelta(minutes=30)
    span = 10 * (len(runs) - 1) + 30
    assert wall_time(runs) == (f"wall time: {span // 60} h {span % 60:02d} min from the first trial's start to the "
                               f"last one's end ({30 * len(runs) // 60} h {30 * len(runs) % 60:02d} min of trial time "
                               f"summed over {len(runs)} runs)")
    assert wall_time(runs.assign(end_time=pd.NaT)) is None


def test_the_index_opens_with_the_verdict(synth_report):
    index = (synth_report.out_dir / "index.md").read_text()
    title, rest = index.split("\n", 1)
    assert title.startswith("# Report") and rest.lstrip().startswith("## Verdict")
    verdict = rest[: rest.index("Generated ")]  # before the provenance, before anything else
    assert "comparison(s) resolved" in verdict and "| variant | baseline | seeds |" in verdict
    assert "Paired on shared seeds; fixed seeds read once" in verdict  # no rules tag: one look at its seeds
    table = pd.read_csv(synth_report.out_dir / "synth__verdict.csv")
    assert len(table) >= 1 and set(table["verdict"]) <= {"better", "worse", "unresolved", "pending", "continue"}


def test_report_verdict_follows_the_sweeps_rules_and_shows_tuned_values():
    from analysis.verdict import report_verdict
    from tests.analysis.frames import runs_frame

    runs = runs_frame({"smoe": 18.0, "mh3": 17.0}, seeds=(0, 1, 2, 3), noise=0.004, **{"optim.lr": 2e-3})
    point = {key: runs.loc[runs["run_id"] == f"{key}-0", "point"].iloc[0] for key in ("smoe", "mh3")}
    rules = {"pairs": [[point["smoe"], point["mh3"]]], "seeds": {"start": 3, "max": 6}, "margin": None,
             "tuning": "optim.lr tuned per variant: 4 tpe trials", "tuned_keys": ["optim.lr"]}
    table, note = report_verdict(runs, "val/main/ppl", rules)
    row = table.iloc[0]
    assert row["verdict"] == "better" and row["seeds"] == 4 and row["optim.lr"] == 2e-3
    assert row["delta"] == pytest.approx(np.log(17 / 18), abs=0.01)
    assert "seeds 3 to 6" in note and "Tuning: optim.lr tuned per variant" in note
    three, _ = report_verdict(runs[runs["seed"] < 3], "val/main/ppl", rules)
    # at 3 of 3..6 seeds the sequential interval is far wider than the one-look t interval
    wide = three.iloc[0]["delta_high"] - three.iloc[0]["delta_low"]
    plain, _ = report_verdict(runs[runs["seed"] < 3], "val/main/ppl", {**rules, "seeds": None})
    assert wide > 2 * (plain.iloc[0]["delta_high"] - plain.iloc[0]["delta_low"])


def _column(cells: list[tuple[float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"row": f"r{i}", "mean": m, "ci_low": lo, "ci_high": hi} for i, (m, lo, hi) in
                         enumerate(cells)])


def test_bold_marks_the_lowest_cell_only_when_its_interval_is_clear_of_the_rest() -> None:
    from analysis.stats import t_half_width
    from analysis.tables import best_row

    assert best_row(_column([(10.0, 9.0, 11.0), (10.5, 9.5, 11.5)])) is None  # overlapping: within noise
    assert best_row(_column([(10.0, 9.0, 11.0), (12.5, 11.5, 13.5)])) == "r0"
    assert best_row(_column([(10.0, np.nan, np.nan), (12.5, 11.5, 13.5)])) is None  # one seed: no interval
    published = pd.DataFrame({"row": ["a", "b"], "mean": [7.0, 6.5], "ci_low": np.nan, "ci_high": np.nan})
    assert best_row(published) == "b"  # the paper's numbers are ranked as printed
    # Seeded simulation under a true zero: 4 variants with equal means, 3 seeds each. Bold must almost never
    # appear (it did in every column before: the lowest mean was always bolded).
    rng = np.random.default_rng(0)
    x = rng.normal(10.0, 1.0, (1000, 4, 3))  # trials x variants x seeds
    mean, half = x.mean(axis=2), t_half_width(x.std(axis=2, ddof=1), 3)
    bolded = [best_row(_column(list(zip(m, m - h, m + h, strict=True)))) is not None for m, h in zip(mean, half,
                                                                                                     strict=True)]
    assert np.mean(bolded) <= 0.05
