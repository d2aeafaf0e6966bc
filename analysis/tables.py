"""Tables in the paper's layouts (Tables 1-5) and a summary of every point, as Markdown and LaTeX.

A :class:`Table` holds display strings, a mask of the best (lowest perplexity) cell per column and
the numbers behind every cell, so tests can check that what is printed equals the aggregates.
Cells read ``mean ± h`` where h is half the width of the 95% CI over seeds (its kind and n are in
the caption; exact bounds are in the aggregates CSV); a single seed prints ``mean (1 seed)``.
Rows carry the paper's names in the paper's order; the Markdown keeps a ``run`` column with our
point label (to find it in the CSVs), the LaTeX leaves it out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from analysis.paper import COLUMNS, TABLE_TITLES
from analysis.paper_match import FINAL_STEPS, match_points
from analysis.stats import interval_text, seed_count
from analysis.style import paper_names
from mhmoe.tracking import names

MISSING = "—"
BOLD_RULE = "lowest perplexity in the column, where its interval lies below every other row's"
"""What bold means (:func:`best_row`), for every caption."""
DIGITS = 2
RUN = "run"
COLUMN_WIDTH_PT = 240.0  # one column of a two-column paper (ACL 219, IEEE 252, article 229 pt)
_CHAR_PT, _COLSEP_PT = 5.0, 12.0  # average glyph width at 10 pt, and 2 x \tabcolsep


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    cells: pd.DataFrame
    """Display strings, index = row names."""
    best: pd.DataFrame
    """Same shape as ``cells``: True where the value is the column's resolved lowest perplexity (:func:`best_row`)."""
    numbers: pd.DataFrame
    """Long: row, column, source (ours/paper), point, label, n, mean, ci_low, ci_high."""
    notes: list[str] = field(default_factory=list)
    caption: str = ""
    """What the table shows, the kind of interval, n, and what ± and bold mean (no "Table N")."""


def caption_text(what: str, numbers: pd.DataFrame, *, paper: bool) -> str:
    """``what`` plus the interval sentence built from the seed counts of our cells in ``numbers``."""
    ours = numbers[(numbers["source"] == "ours") & numbers["mean"].notna()] if len(numbers) else numbers
    ns = list(ours["n"]) if len(ours) else []
    if ns and max(ns) >= 2:
        text = f"{what}. Ours: mean ± half-width of the {interval_text(ns)}"
    else:
        text = f"{what}. Ours: mean of {seed_count(ns)} (no interval)"
    text += f"; bold: {BOLD_RULE}"
    return text + ("; paper columns are the published numbers." if paper else ".")


def format_cell(mean: float, ci_low: float, ci_high: float, n: int) -> str:
    if n == 0 or not np.isfinite(mean):
        return MISSING
    if not np.isfinite(ci_low):
        return f"{mean:.{DIGITS}f} (1 seed)"
    return f"{mean:.{DIGITS}f} ± {(ci_high - ci_low) / 2:.{DIGITS}f}"


def _ours(agg: pd.DataFrame, point: str | None, val_set: str) -> dict:
    hit = agg[(agg["point"] == point) & (agg["metric"] == names.val_metric(val_set, "ppl"))] if point else agg.iloc[:0]
    if hit.empty:
        return {"n": 0, "mean": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    r = hit.iloc[0]
    return {"n": int(r["n"]), "mean": r["mean"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}


def _assemble(key: str, title: str, rows: list[dict], columns: list[str], notes: list[str],
              index_name: str = "model") -> Table:
    numbers = pd.DataFrame(rows)
    order = list(dict.fromkeys(numbers["row"]))
    cells = numbers.pivot(index="row", columns="column", values="cell").reindex(index=order, columns=columns)
    cells.index.name, cells.columns.name = index_name, None
    best = pd.DataFrame(False, index=order, columns=columns)
    best.index.name = index_name
    for column, group in numbers.groupby("column", sort=False):
        if column != RUN and column in best.columns:
            row = best_row(group)
            if row is not None:
                best.loc[row, column] = True
    return Table(key, title, cells.fillna(MISSING), best, numbers.drop(columns="cell"), notes)


def best_row(column: pd.DataFrame) -> str | None:
    """The row of the lowest mean in one column, when that is resolved; None otherwise.

    Published numbers (no interval) are ranked as printed. Our cells only when the lowest one's
    95% interval lies wholly below every other cell's interval: with overlapping intervals the
    order is within noise, and bolding it would claim a winner the seeds do not show.
    """
    cells = column[column["mean"].notna()]
    if cells.empty:
        return None
    lowest = cells.loc[cells["mean"].idxmin()]
    others = cells.drop(index=lowest.name)
    has_ci = "ci_high" in cells.columns and cells["ci_high"].notna().any()
    if not has_ci or others.empty:
        return str(lowest["row"])
    if not np.isfinite(lowest.get("ci_high", np.nan)) or not np.isfinite(others["ci_low"]).all():
        return None  # a cell without an interval (1 seed) cannot be told apart
    return str(lowest["row"]) if lowest["ci_high"] < others["ci_low"].min() else None


def paper_table(agg: pd.DataFrame, points: pd.DataFrame, table: str, sets: list[str],
                steps: int = FINAL_STEPS) -> Table | None:
    """Paper ``table`` layout: paper rows x (our run label, our sets, the paper's columns).

    None when no point of the sweep matches a row of the table.
    """
    matched = match_points(points, table, steps)
    if matched["point"].isna().all():
        return None
    rows, notes = [], []
    for _, m in matched.iterrows():
        rows.append({"row": m["row"], "column": RUN, "cell": m["label"] or MISSING, "mean": np.nan,
                     "source": "ours", "point": m["point"], "label": m["label"]})
        for s in sets:
            o = _ours(agg, m["point"], s)
            rows.append({"row": m["row"], "column": f"{s} (ours)", "cell": format_cell(**o), **o,
                         "source": "ours", "point": m["point"], "label": m["label"]})
        for c in COLUMNS:
            rows.append({"row": m["row"], "column": f"{c} (paper)", "cell": f"{m[c]:.{DIGITS}f}", "mean": m[c],
                         "n": 1, "source": "paper", "point": None, "label": None})
        if m["note"] and m["note"] != "not in the sweep":
            notes.append(f"{m['row']}: used {m['label']}; {m['note']}")
    stepped = f" (paper at {int(matched['steps'].iloc[0]):,} steps)"
    columns = [RUN, *[f"{s} (ours)" for s in sets], *[f"{c} (paper)" for c in COLUMNS]]
    built = _assemble(f"table{table[1:]}", TABLE_TITLES[table] + stepped, rows, columns, notes)
    number, what = TABLE_TITLES[table].split(": ", 1)
    what = f"{what[0].upper()}{what[1:]}, in the layout of the paper's {number}{stepped}"
    return _with_caption(built, caption_text(what, built.numbers, paper=True))


def _with_caption(table: Table, caption: str) -> Table:
    return replace(table, caption=caption)


def summary_table(agg: pd.DataFrame, sets: list[str]) -> Table:
    """Every point of the sweep (paper names, paper order) x our validation sets, with its seed count."""
    rows = []
    names = paper_names(agg) if len(agg) else {}
    for label, name in names.items():
        g = agg[agg["label"] == label]
        point = g["point"].iloc[0]
        seeds = int(g["n"].max()) if len(g) else 0
        rows.append({"row": name, "column": RUN, "cell": label, "mean": np.nan, "n": seeds,
                     "source": "ours", "point": point, "label": label})
        rows.append({"row": name, "column": "seeds", "cell": str(seeds), "mean": np.nan, "n": seeds,
                     "source": "ours", "point": point, "label": label})
        for s in sets:
            o = _ours(agg, point, s)
            rows.append({"row": name, "column": s, "cell": format_cell(**o), **o, "source": "ours",
                         "point": point, "label": label})
    title = "Final validation perplexity of every point"
    table = _assemble("summary", title, rows, [RUN, "seeds", *sets], [])
    table.best["seeds"] = False
    return _with_caption(table, caption_text(title, table.numbers, paper=False))


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown; best values in bold."""
    return markdown_table(table.cells, table.best)


def markdown_table(cells: pd.DataFrame, bold: pd.DataFrame | None = None, *, index: bool = True) -> str:
    """Any frame as a GitHub-flavoured Markdown table (index as the first column)."""
    columns = [str(c) for c in cells.columns]
    header = ([cells.index.name or ""] if index else []) + columns
    # numbers right-aligned, text left-aligned
    align = (["---"] if index else []) + ["---:" if _numeric_column(cells[c]) else "---" for c in cells.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row, values in cells.iterrows():
        shown = [f"**{v}**" if bold is not None and bold.loc[row, c] else str(v) for c, v in values.items()]
        lines.append("| " + " | ".join(_md_escape(x) for x in ([str(row)] if index else []) + shown) + " |")
    return "\n".join(lines) + "\n"


def _numeric_column(values: pd.Series) -> bool:
    return all(re.match(r"^[*+\-−]*[0-9.]", str(v)) or str(v) == MISSING for v in values)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return out.replace("±", r"$\pm$").replace(MISSING, "--").replace("−", "$-$").replace("–", "--")


def latex_width_pt(header: list[str], rows: list[list[str]]) -> float:
    """Rough printed width of a tabular (display strings): widest entry per column at an average
    glyph width, plus the column separation. Only decides ``table`` vs ``table*``."""
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows)]
    return sum(w * _CHAR_PT + _COLSEP_PT for w in widths)


def _latex_columns(columns: list[str]) -> pd.MultiIndex | list[str]:
    """"shakespeare (ours)" / "C4 (paper)" headers as a two-row header: ours | paper over the sets."""
    matches = (re.match(r"^(?P<set>.+) \((?P<src>ours|paper)\)$", c) for c in columns)
    split = [m for m in matches if m is not None]
    if len(split) < len(columns):
        return [latex_escape(c) for c in columns]
    return pd.MultiIndex.from_tuples([(m["src"], latex_escape(m["set"])) for m in split])


def to_latex(table: Table) -> str:
    """``Styler.to_latex`` with booktabs rules, best values in ``\\textbf``, paper names as rows (no
    ``run`` column), a caption without "Table N" and a label; ``table*`` when wider than a column."""
    cells = table.cells.drop(columns=[RUN], errors="ignore")
    best = table.best.drop(columns=[RUN], errors="ignore")
    header = [str(cells.index.name or ""), *[re.sub(r" \((ours|paper)\)$", "", c) for c in cells.columns]]
    wide = latex_width_pt(header, [[r, *v] for r, v in zip(cells.index, cells.to_numpy().tolist())]) > COLUMN_WIDTH_PT
    cells = cells.map(latex_escape)
    cells.index = [latex_escape(r) for r in cells.index]  # unnamed: Styler would give the name a row of its own
    cells.columns = _latex_columns(list(cells.columns))
    mask = best.to_numpy()
    styler = cells.style.apply(lambda _: np.where(mask, "textbf:--rwrap;", ""), axis=None)
    return styler.to_latex(hrules=True, column_format="l" + "r" * cells.shape[1],
                           caption=latex_escape(table.caption or table.title), label=f"tab:{table.key}",
                           position_float="centering", environment="table*" if wide else None,
                           multicol_align="c", clines=None)
