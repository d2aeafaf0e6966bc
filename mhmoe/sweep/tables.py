"""Plain fixed-width text tables (``tabulate``): the plan's grid (``mhmoe sweep plan``), trial rows, verdicts
and the budget table."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from tabulate import SEPARATING_LINE, DataRow, Line, TableFormat, tabulate

from mhmoe.sweep.plan import TrialPoint


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


PLAN_COLUMNS = ("#", "point", "variant", "heads", "experts", "d_ff", "top_k", "bits", "seed",
                "total", "active", "mults/tok", "dflops%", "dparams%", "hash")


def plan_rows(points: list[TrialPoint] | tuple[TrialPoint, ...]) -> list[dict[str, str]]:
    rows = []
    for i, p in enumerate(points):
        cfg = p.config
        dense = not cfg.model.variant.routes
        rows.append({
            "#": str(i), "point": p.label, "variant": p.variant,
            "heads": "-" if dense else str(cfg.moe.heads),
            "experts": "-" if dense else str(cfg.moe.num_experts),
            "d_ff": str(cfg.model.d_ff if dense else cfg.moe.expert_d_ff),
            "top_k": "-" if dense else str(cfg.moe.top_k),
            "bits": f"{cfg.quant.weight_bits:g}", "seed": str(cfg.seed),
            "total": _millions(p.budget["budget.total_params"]),
            "active": _millions(p.budget["budget.active_params"]),
            "mults/tok": _millions(p.budget["budget.forward_mults_per_token"]),
            "dflops%": f"{p.flops_mismatch_pct:+.1f}", "dparams%": f"{p.params_mismatch_pct:+.1f}",
            "hash": p.config_hash[:8],
        })
    return rows


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


__all__ = ["PLAN_COLUMNS", "format_table", "plan_rows"]
