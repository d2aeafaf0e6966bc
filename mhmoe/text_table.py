"""Plain fixed-width text tables (``tabulate``) for the terminal: the budget table, the sweep plan, trial
rows and verdicts all print through :func:`format_table`."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from tabulate import SEPARATING_LINE, DataRow, Line, TableFormat, tabulate

# tabulate's "simple" layout, fed the header as the first row: with ``headers=`` tabulate widens every
# column to two past its header, which pushed the narrow columns apart (and broke "name  name" lookups).
_RULED = TableFormat(lineabove=None, linebelowheader=Line("", "-", "  ", ""), linebetweenrows=None, linebelow=None,
                     headerrow=DataRow("", "  ", ""), datarow=DataRow("", "  ", ""), padding=0, with_header_hide=None)


def format_table(rows: Sequence[dict[str, str]], columns: Sequence[str], *, right: Collection[str] = ()) -> str:
    """Fixed-width table of display strings: a header, a rule, one line a row (pipes into less and diff well).

    Cells are shown as given (no number parsing); columns in ``right`` are right-aligned, the rest left."""
    body = [[r.get(c, "") for c in columns] for r in rows]
    return tabulate([list(columns), SEPARATING_LINE, *body], tablefmt=_RULED, disable_numparse=True,
                    colalign=["right" if c in right else "left" for c in columns])


__all__ = ["format_table"]
