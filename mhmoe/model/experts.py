"""Stacked SwiGLU experts computed over expert-sorted rows.

Rows arrive sorted by expert (``counts_E`` rows for expert e, in order; mhmoe/model/slots.py).
Three kernels compute them: ``grouped_mm`` (``torch.nn.functional.grouped_mm`` over the stacked
weights), ``bmm`` (rows padded to the same count C per expert, one batched matmul over (E, C, d);
on CPU this beats grouped_mm, a loop of matmuls there, when routing is near balanced) and
``loop`` (one matmul per expert, portable). None materialises a one-hot dispatch tensor.

Shape legend: A routed rows (assignments), E experts, d expert in/out dim, F expert hidden dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mhmoe.model.layers import silu_gate

GROUPED_MM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
"""What ``F.grouped_mm`` accepts (torch 2.13); other dtypes (float64 in gradient checks) use the loop."""

BMM_MAX_PADDING = 1.25
"""``auto`` on a multi-threaded CPU pads every expert to the largest count and runs ``bmm`` while
E x that count is at most this many times the rows. Balanced, one batched matmul is 0.65-1.0x
the time of grouped_mm (a loop of small matmuls on CPU, each its own parallel region) at 2
threads; past ~1.25x padding the wasted rows cost more. On one thread the two are equal when
balanced, so there it pads only when nothing is wasted ("Kernel choice" in benchmarks/RESULTS.md)."""


def grouped_mm_supported(d_in: int, d_ff: int, dtype: torch.dtype = torch.float32) -> bool:
    """grouped_mm takes fp32/bf16/fp16 only, with every stride a multiple of 16 bytes."""
    if not hasattr(F, "grouped_mm") or dtype not in GROUPED_MM_DTYPES:
        return False
    per16 = 16 // torch.tensor([], dtype=dtype).element_size()
    return d_in % per16 == 0 and d_ff % per16 == 0


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on, else ``x``'s: autocast does not cover grouped_mm or
    the per-expert matmuls on stacked weights, and an SMoE's experts (no head projection) would
    otherwise get the fp32 output of the RMSNorm and run in fp32 under bf16-mixed."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


@torch.compiler.disable
def grouped_mm(x_AD: torch.Tensor, w_EDF: torch.Tensor, offs_E: torch.Tensor) -> torch.Tensor:
    """``F.grouped_mm`` kept out of torch.compile graphs: its fake-tensor rule (torch 2.13) only
    accepts bf16, so tracing an fp32 model would fail; eager runs it in any dtype."""
    return F.grouped_mm(x_AD, w_EDF, offs=offs_E)


class GroupedExperts(nn.Module):
    """E SwiGLU experts ``w2(silu(w1 x) * w3 x)`` with weights stacked along a leading E axis.

    ``w1`` and ``w3`` have shape (E, d, F), ``w2`` (E, F, d). They stay separate tensors: a fused
    (E, d, 2F) up projection costs a (A, 2F) concat in backward that is slower on CPU than the
    second grouped matmul (benchmarks/moe_layer.py). The ``_weights``/``_rows_in``/``_rows_mid``
    hooks are identities here; the BitNet converter swaps in a subclass that quantizes through them.
    """

    quant_role = "expert"

    def __init__(self, num_experts: int, d_in: int, d_ff: int, dispatch: str = "auto") -> None:
        super().__init__()
        self.num_experts, self.d_in, self.d_ff = num_experts, d_in, d_ff
        self.w1 = nn.Parameter(torch.empty(num_experts, d_in, d_ff))
        self.w3 = nn.Parameter(torch.empty(num_experts, d_in, d_ff))
        self.w2 = nn.Parameter(torch.empty(num_experts, d_ff, d_in))
        self.dispatch = dispatch
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same distribution as nn.Linear's default (uniform +-1/sqrt(fan_in)) for every expert.
        for w in (self.w1, self.w3):
            nn.init.uniform_(w, -1 / math.sqrt(self.d_in), 1 / math.sqrt(self.d_in))
        nn.init.uniform_(self.w2, -1 / math.sqrt(self.d_ff), 1 / math.sqrt(self.d_ff))

    def choose_kernel(self, counts_E: torch.Tensor, dtype: torch.dtype) -> tuple[str, int | None]:
        """(kernel, rows per expert when padded) for rows sorted by expert with these counts.

        ``auto``: on CPU (fp32/bf16/fp16) it reads the counts on the host (cheap there) and pads
        to the largest one when that wastes little; on other devices it stays on grouped_mm, which
        needs no host sync. Dtypes grouped_mm does not take fall back to the loop.
        """
        if self.dispatch == "bmm":
            return "bmm", int(counts_E.max())
        if not self.use_grouped_mm(dtype):
            return "loop", None
        if self.dispatch == "auto" and counts_E.device.type == "cpu":
            most, rows = int(counts_E.max()), int(counts_E.sum())
            limit = BMM_MAX_PADDING if torch.get_num_threads() > 1 else 1.0
            if rows and self.num_experts * most <= limit * rows:
                return "bmm", most
        return "grouped_mm", None

    def use_grouped_mm(self, dtype: torch.dtype) -> bool:
        """Whether the packed kernel is grouped_mm (else the loop)."""
        if self.dispatch in ("loop", "bmm"):
            return False
        supported = grouped_mm_supported(self.d_in, self.d_ff, dtype)
        if self.dispatch == "grouped_mm" and not supported:
            if dtype not in GROUPED_MM_DTYPES:
                raise ValueError(f"moe.dispatch='grouped_mm' takes {[str(d) for d in GROUPED_MM_DTYPES]}, "
                                 f"not {dtype}; use moe.dispatch=auto")
            raise ValueError(
                "moe.dispatch='grouped_mm' needs dims divisible by "
                f"{16 // torch.tensor([], dtype=dtype).element_size()}"
                f" (got d={self.d_in}, expert_d_ff={self.d_ff}); use moe.dispatch=auto"
            )
        return supported

    # Hooks the quantized subclass overrides (weights per expert, activations per row).
    def _weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.w1, self.w3, self.w2

    def _rows_in(self, x_AD: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        return x_AD

    def _rows_mid(self, h_AF: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        return h_AF

    def forward(self, x_AD: torch.Tensor, counts_E: torch.Tensor, kernel: str | None = None) -> torch.Tensor:
        """x_AD sorted by expert, counts_E rows per expert -> y_AD in the same order.

        ``kernel`` from :meth:`choose_kernel`; ``bmm`` needs every count equal (padded rows).
        Without it the packed kernel of ``dispatch`` runs (grouped_mm or loop).
        """
        x_AD = x_AD.to(compute_dtype(x_AD))
        w1, w3, w2 = (w.to(x_AD.dtype) for w in self._weights())
        x_AD = self._rows_in(x_AD, counts_E)
        if kernel is None:
            kernel = "grouped_mm" if self.use_grouped_mm(x_AD.dtype) else "loop"
        if kernel == "bmm":
            return self._bmm(x_AD, counts_E, w1, w3, w2)
        if kernel == "grouped_mm":
            offs_E = torch.cumsum(counts_E, 0, dtype=torch.int32)
            gate_AF = grouped_mm(x_AD, w1, offs_E)
            up_AF = grouped_mm(x_AD, w3, offs_E)
            h_AF = self._rows_mid(silu_gate(gate_AF, up_AF), counts_E)
            return grouped_mm(h_AF, w2, offs_E)
        return self._loop(x_AD, counts_E, w1, w3, w2)

    def _bmm(
        self, x_AD: torch.Tensor, counts_E: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor
    ) -> torch.Tensor:
        """Padded path: the same C rows for every expert, three batched matmuls over (E, C, .)."""
        E, A = self.num_experts, x_AD.shape[0]
        x_ECD = x_AD.view(E, A // E, self.d_in)
        h_ECF = silu_gate(torch.bmm(x_ECD, w1), torch.bmm(x_ECD, w3))
        h_ECF = self._rows_mid(h_ECF.view(A, self.d_ff), counts_E).view(E, A // E, self.d_ff)
        return torch.bmm(h_ECF, w2).view(A, self.d_in)

    def _loop(
        self, x_AD: torch.Tensor, counts_E: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, w2: torch.Tensor
    ) -> torch.Tensor:
        """Portable path: one matmul pair per expert with rows (one host sync for the split sizes)."""
        outputs = []
        h_parts = []
        for e, x_rows in enumerate(torch.split(x_AD, counts_E.tolist())):
            h_parts.append(silu_gate(x_rows @ w1[e], x_rows @ w3[e]))
        h_AF = self._rows_mid(torch.cat(h_parts) if h_parts else x_AD.new_zeros(0, self.d_ff), counts_E)
        for e, h_rows in enumerate(torch.split(h_AF, counts_E.tolist())):
            outputs.append(h_rows @ w2[e])
        return torch.cat(outputs) if outputs else x_AD.new_zeros(0, self.d_in)
