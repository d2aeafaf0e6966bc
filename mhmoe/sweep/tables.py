"""The rows of the sweep plan's table (``mhmoe sweep plan``), printed by :func:`mhmoe.text_table.format_table`."""

from __future__ import annotations

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


__all__ = ["PLAN_COLUMNS", "plan_rows"]
