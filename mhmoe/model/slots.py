"""Where each routed assignment's row lives in the experts' buffer, and the moves in and out of it.

The experts compute over a buffer of R rows ordered by expert (token order within an expert):

- packed (grouped_mm, loop): R = kept assignments, expert e's rows back to back;
- padded (batched matmul): R = E x C, expert e owns rows [e*C, (e+1)*C) and the ones it does not
  fill are padding.

Both moves, sub-tokens -> buffer and buffer -> sub-tokens (summed over the k choices), are gathers
whose backward is the opposite gather (:class:`GatherSum`), never a scatter-add: on CPU the
``index_add`` backward of ``index_select`` cost more than the gather itself (benchmarks/RESULTS.md).
Each output row has its own fixed inputs, so forward and backward are deterministic on any device.

Shape legend: S sub-tokens, K top-k, A = S*K assignments (a = s*K + k), E experts, R buffer rows,
C rows per expert when padded, d row width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SlotLayout:
    """The two index maps between assignments and buffer rows."""

    slot_SK: torch.Tensor
    """(S, K) buffer row of each assignment; R (a zero row) where the assignment was dropped."""
    assignment_R1: torch.Tensor
    """(R, 1) assignment each buffer row holds; A (a zero row) for padding rows."""
    counts_E: torch.Tensor
    """(E,) buffer rows per expert: kept assignments when packed, C each when padded."""
    dropped: bool
    """Some assignment has no row (capacity dropping): slot_SK points at the zero row R."""
    padded: bool
    """Some row holds no assignment: assignment_R1 points at the zero row A."""

    @property
    def token_R1(self) -> torch.Tensor:
        """(R, 1) sub-token of each buffer row; S (= A // K, a zero row) for padding rows."""
        return self.assignment_R1 // self.slot_SK.shape[1]


def sort_by_expert(
    experts_SK: torch.Tensor, keep_SK: torch.Tensor | None, routed_E: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kept assignments sorted by expert (stable: token order within): (assignments, their experts,
    kept rows per expert). ``routed_E`` counts every assignment (the dropless counts)."""
    expert_A = experts_SK.reshape(-1)
    if keep_SK is None:  # dropless: the sort order is the whole assignment list
        order = torch.argsort(expert_A, stable=True)
        return order, expert_A[order], routed_E
    kept = torch.arange(expert_A.numel(), device=expert_A.device)[keep_SK.reshape(-1)]
    kept_expert = expert_A[kept]
    order = torch.argsort(kept_expert, stable=True)
    counts_E = torch.bincount(kept_expert, minlength=routed_E.numel())
    return kept[order], kept_expert[order], counts_E


def slot_layout(
    sorted_assignments: torch.Tensor,
    sorted_experts: torch.Tensor,
    counts_E: torch.Tensor,
    shape_SK: tuple[int, int],
    rows_per_expert: int | None,
) -> SlotLayout:
    """Packed layout when ``rows_per_expert`` is None, else padded to that many rows per expert
    (at least the largest count)."""
    S, K = shape_SK
    kept = sorted_assignments.numel()
    device = sorted_assignments.device
    rank = torch.arange(kept, device=device)
    if rows_per_expert is None:
        rows, row_sorted, counts = kept, rank, counts_E
    else:
        starts_E = torch.cumsum(counts_E, 0) - counts_E
        rows = counts_E.numel() * rows_per_expert
        row_sorted = rank - starts_E[sorted_experts] + sorted_experts * rows_per_expert
        counts = torch.full_like(counts_E, rows_per_expert)
    slot_A = torch.full((S * K,), rows, dtype=torch.long, device=device)
    slot_A[sorted_assignments] = row_sorted
    if rows == kept:
        assignment_R = sorted_assignments
    else:
        assignment_R = torch.full((rows,), S * K, dtype=torch.long, device=device)
        assignment_R[row_sorted] = sorted_assignments
    return SlotLayout(slot_A.view(S, K), assignment_R.view(rows, 1), counts, kept < S * K, rows > kept)


def _gather_sum(x_Nd: torch.Tensor, index_MJ: torch.Tensor, zero_row: bool) -> torch.Tensor:
    if zero_row:  # index N reads zeros
        x_Nd = F.pad(x_Nd, (0, 0, 0, 1))
    M, J = index_MJ.shape
    rows = x_Nd.index_select(0, index_MJ.reshape(-1))
    return rows if J == 1 else rows.view(M, J, -1).sum(dim=1)


class GatherSum(torch.autograd.Function):
    """``out[m] = sum_j x[index[m, j]]`` (index N = a zero row). ``adjoint`` is the transposed map
    (for each row n of x, the rows m that read it), so the backward is the same op over it."""

    @staticmethod
    def forward(
        ctx: Any,  # FunctionCtx, which does not declare the attributes saved on it
        x_Nd: torch.Tensor,
        index_MJ: torch.Tensor,
        adjoint_NJ: torch.Tensor,
        index_zero_row: bool,
        adjoint_zero_row: bool,
    ) -> torch.Tensor:
        ctx.save_for_backward(index_MJ, adjoint_NJ)
        ctx.zero_rows = (index_zero_row, adjoint_zero_row)
        return _gather_sum(x_Nd, index_MJ, index_zero_row)

    @staticmethod
    def backward(ctx: Any, grad_Md: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        index_MJ, adjoint_NJ = ctx.saved_tensors
        index_zero_row, adjoint_zero_row = ctx.zero_rows
        grad_Nd = GatherSum.apply(grad_Md.contiguous(), adjoint_NJ, index_MJ, adjoint_zero_row, index_zero_row)
        return grad_Nd, None, None, None, None


def to_slots(x_Sd: torch.Tensor, layout: SlotLayout) -> torch.Tensor:
    """(S, d) sub-tokens -> (R, d) buffer rows (padding rows zero)."""
    return GatherSum.apply(x_Sd, layout.token_R1, layout.slot_SK, layout.padded, layout.dropped)


def from_slots(y_Rd: torch.Tensor, layout: SlotLayout) -> torch.Tensor:
    """(R, d) buffer rows -> (S, d): each sub-token's k rows summed (dropped choices add zero)."""
    return GatherSum.apply(y_Rd, layout.slot_SK, layout.token_R1, layout.dropped, layout.padded)


def gates_in_slots(gates_SK: torch.Tensor, layout: SlotLayout) -> torch.Tensor:
    """(R, 1) gate of the assignment each buffer row holds (0 for padding rows)."""
    gates_A = gates_SK.reshape(-1)
    if layout.padded:
        gates_A = F.pad(gates_A, (0, 1))
    return gates_A.index_select(0, layout.assignment_R1.view(-1)).unsqueeze(-1)
