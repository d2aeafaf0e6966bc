"""An mhmoe checkpoint as an lm-evaluation-harness model, registered as ``mhmoe``.

``mhmoe lm-eval --model mhmoe --model_args pretrained=PATH`` and ``simple_evaluate(model="mhmoe", ...)``
with this module imported both build :class:`MHMoELM`. The stock ``lm_eval`` command cannot find it
(lm-eval 0.4 has no model plugins): ``mhmoe lm-eval`` imports this module first, or ``mhmoe export``
writes a Hugging Face folder that ``lm_eval --model hf`` loads. Weights, config and tokenizer come only from
:func:`mhmoe.training.checkpoint.load_checkpoint` (``weights_only`` loading), so anything that is not an
mhmoe training checkpoint is refused with :class:`~mhmoe.training.checkpoint.CheckpointError`.

Batches are right-padded: attention is causal, so a padded position never changes a real one, and
in dropless MoE routing every token is routed on its own. Scores therefore do not depend on which
other requests share a batch. The one exception is capacity routing applied at eval
(``moe.capacity_mode=capacity`` with ``moe.drop_at_eval``), where tokens compete for expert slots;
there every request runs alone (batch size 1).

``dtype``: float32 (default), bfloat16 or float16, the whole model cast (the router still routes in
float32). ``batch_size``: an integer, or lm-eval's ``auto`` / ``auto:N``: the largest of
:data:`AUTO_BATCH_SIZES` whose forward pass at full context fits on a GPU, and
:data:`CPU_AUTO_BATCH_SIZE` on the CPU, where memory does not bound it and larger batches only add
padding.

Shape legend: B batch, T tokens, N scored tokens, V vocabulary.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
from tqdm import tqdm

from mhmoe.config.base import ConfigError
from mhmoe.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

TokenRequest = tuple[Any, list[int], list[int]]
"""(request key, context tokens, continuation tokens), what TemplateLM hands to scoring."""


def resolve_device(device: str | None) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a GPU that is not there is an error, not a silent CPU run."""
    dev = torch.device(device or "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but torch sees no CUDA GPU; use device=cpu "
                         "(lm-eval CLI: --device cpu, or leave --device out)")
    return dev


DTYPES = ("float32", "bfloat16", "float16")
CPU_AUTO_BATCH_SIZE = 8
"""``batch_size=auto`` on the CPU (the adapter's default batch size)."""
AUTO_BATCH_SIZES = (64, 32, 16, 8, 4, 2, 1)
"""Batch sizes ``batch_size=auto`` tries on a GPU, largest first (lm-eval's HF model starts at 64 too)."""


def positive_int(name: str, value: int | str) -> int:
    """Model args arrive as strings from ``--model_args``."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return number


def check_model_args(args: dict[str, Any]) -> None:
    """``--model_args`` for the mhmoe model: a checkpoint and known keys only (lm-eval would pass
    them on as keyword arguments, and a missing or unknown one would end in a TypeError traceback)."""
    allowed = [name for name in inspect.signature(MHMoELM.__init__).parameters if name != "self"]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ConfigError(f"--model_args {', '.join(unknown)}: not an argument of the mhmoe model; "
                          f"choose from {allowed}")
    if not args.get("pretrained"):
        raise ConfigError("--model_args needs pretrained=CHECKPOINT (a .ckpt written by mhmoe train)")


@register_model("mhmoe")
class MHMoELM(TemplateLM):
    """Scores and greedily generates text with a trained mhmoe checkpoint."""

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> MHMoELM:
        check_model_args(lm_utils.simple_parse_args_string(arg_string))
        return super().create_from_arg_string(arg_string, additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None) -> MHMoELM:
        check_model_args(arg_dict)
        return super().create_from_arg_obj(arg_dict, additional_config)

    def __init__(
        self,
        pretrained: str,
        device: str | None = "cpu",
        batch_size: int | str | None = 8,
        max_gen_toks: int | str = 256,
        dtype: str = "float32",
        max_length: int | str | None = None,
        max_batch_size: int | str | None = None,  # the ceiling of batch_size=auto
    ) -> None:
        """``pretrained``: checkpoint path. ``max_length``: context window, default the run's
        ``train.seq_len``, at most the model's ``max_seq_len``."""
        super().__init__()
        self._device = resolve_device(device)
        loaded = load_checkpoint(pretrained, map_location=self._device)
        self.checkpoint = loaded
        self.net = loaded.net
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}: choose one of {', '.join(DTYPES)}")
        self.net.to(getattr(torch, dtype)).eval()
        self.tokenizer = loaded.tokenizer
        self.max_gen_toks = positive_int("max_gen_toks", max_gen_toks)
        model_len = self.net.model_cfg.max_seq_len
        # Default to the length the model was trained on: RoPE positions beyond it were never seen.
        trained_len = min(loaded.config.train.seq_len, model_len)
        self._max_length = trained_len if max_length is None else positive_int("max_length", max_length)
        if self._max_length > model_len:
            raise ValueError(f"max_length={self._max_length} exceeds the model's max_seq_len={model_len}")
        if str(batch_size).startswith("auto"):
            self.batch_size = self.auto_batch_size(max_batch_size)
        else:
            self.batch_size = positive_int("batch_size", 8 if batch_size is None else batch_size)
        if loaded.config.moe.batch_dependent_at_eval and self.batch_size > 1:
            log.warning("capacity routing at eval: tokens compete for expert slots, so each request runs alone "
                        "(batch size 1) to keep scores independent of the batch")
            self.batch_size = 1

    @torch.inference_mode()
    def auto_batch_size(self, max_batch_size: int | str | None) -> int:
        """``batch_size=auto`` (``auto:N`` too; the size is picked once, N is not used): the module
        docstring's rule, at most ``max_batch_size``."""
        cap = AUTO_BATCH_SIZES[0] if max_batch_size is None else positive_int("max_batch_size", max_batch_size)
        if self._device.type == "cpu":
            return min(CPU_AUTO_BATCH_SIZE, cap)
        for size in sorted({cap, *(s for s in AUTO_BATCH_SIZES if s < cap)}, reverse=True):
            # Identical tokens route to one expert: the dropless layers' worst case for memory.
            probe_BT = torch.full((size, self._max_length), self.eot_token_id, dtype=torch.long, device=self._device)
            try:
                self.net(probe_BT)
                return size
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
        return 1

    # -- what lm-eval asks of a model -------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        # Rolling windows and empty contexts start from EOS: documents are EOS-separated in training.
        return self.tokenizer.eos_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return f"mhmoe-{self.tokenizer.fingerprint[:16]}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.tokenizer.encode(string)

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(tokens)

    def get_model_info(self) -> dict[str, Any]:
        """Merged into ``results["config"]`` by simple_evaluate."""
        return {"checkpoint": str(self.checkpoint.path), "global_step": self.checkpoint.global_step,
                "variant": self.checkpoint.config.variant, "max_length": self.max_length}

    # -- scoring ----------------------------------------------------------------------------------

    @torch.inference_mode()
    def _logits_at(self, inputs: list[list[int]], spans: list[range]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad ``inputs`` into one (B, T) batch; return the logits at every row's ``spans``
        concatenated, (N, V) in float32, and the row each of the N positions belongs to, (N,)."""
        width = max(len(x) for x in inputs)
        idx_BT = torch.full((len(inputs), width), self.eot_token_id, dtype=torch.long)
        for row, tokens in enumerate(inputs):
            idx_BT[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        rows_N = torch.cat([torch.full((len(span),), row, dtype=torch.long) for row, span in enumerate(spans)])
        pos_N = torch.cat([torch.arange(span.start, span.stop) for span in spans])
        logits_BTV = self.net(idx_BT.to(self._device)).logits
        rows_N, pos_N = rows_N.to(self._device), pos_N.to(self._device)
        return logits_BTV[rows_N, pos_N].float(), rows_N

    @torch.inference_mode()
    def _score_batch(self, rows: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Sum of log p(continuation | context) and whether greedy decoding reproduces it, per row."""
        window = self.max_length
        # Context truncated from the left: the last `window` tokens predict the continuation.
        inputs = [(ctx + cont)[-(window + 1) :][:-1] for ctx, cont in rows]
        spans = [range(len(inp) - len(cont), len(inp)) for inp, (_, cont) in zip(inputs, rows, strict=True)]
        logits_NV, rows_N = self._logits_at(inputs, spans)
        target_N = torch.tensor([t for _, cont in rows for t in cont], dtype=torch.long, device=logits_NV.device)
        # Sums in float64: a document's log-likelihood adds up thousands of float32 token terms.
        logp_N = F.log_softmax(logits_NV, dim=-1).gather(-1, target_N[:, None]).squeeze(-1).double()
        missed_N = (logits_NV.argmax(dim=-1) != target_N).double()
        totals_B = torch.zeros(len(rows), dtype=torch.float64, device=logp_N.device).index_add_(0, rows_N, logp_N)
        misses_B = torch.zeros(len(rows), dtype=torch.float64, device=logp_N.device).index_add_(0, rows_N, missed_N)
        return [(total, misses == 0) for total, misses in zip(totals_B.tolist(), misses_B.tolist(), strict=True)]

    def _loglikelihood_tokens(self, requests: list[TokenRequest], disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        for _, ctx, cont in requests:
            if not ctx or not cont:
                raise ValueError("loglikelihood needs a non-empty context and continuation (TemplateLM adds EOS)")
            if len(cont) > self.max_length:
                raise ValueError(f"continuation of {len(cont)} tokens exceeds the model's context length "
                                 f"{self.max_length}; it cannot be scored in one window")
        # Longest first: batches hold similar lengths (little padding) and memory peaks at once.
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        with tqdm(total=len(requests), disable=disable_tqdm, desc="mhmoe loglikelihood") as bar:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                scored = self._score_batch([(requests[i][1], requests[i][2]) for i in chunk])
                for i, answer in zip(chunk, scored, strict=True):
                    results[i] = answer
                    if requests[i][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
                bar.update(len(chunk))
        return results  # type: ignore[return-value]

    def rolling_windows(self, text: str) -> list[tuple[list[int], list[int]]]:
        """Disjoint (context, continuation) windows covering every token of ``text``, first from EOS."""
        windows = lm_utils.get_rolling_token_windows(
            token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
            max_seq_len=self.max_length, context_len=1,
        )
        return [lm_utils.make_disjoint_window(w) for w in windows]

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        owners, windows = [], []
        for index, request in enumerate(requests):
            for ctx, cont in self.rolling_windows(request.args[0]):
                owners.append(index)
                windows.append((None, ctx, cont))
        # All windows of all documents in one sorted pass: full batches even for short documents.
        scored = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for index, (logprob, _) in zip(owners, scored, strict=True):
            totals[index] += logprob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # -- generation -------------------------------------------------------------------------------

    def _next_tokens(self, sequences: list[list[int]]) -> list[int]:
        """Greedy next token of each sequence, seeing at most the model's context length."""
        inputs = [seq[-self.max_length :] for seq in sequences]
        logits_BV, _ = self._logits_at(inputs, [range(len(x) - 1, len(x)) for x in inputs])
        return logits_BV.argmax(dim=-1).tolist()

    def greedy_generate(self, prompts: list[list[int]], max_new_tokens: int, until: list[str]) -> list[str]:
        """Greedy continuations, each stopped at EOS, at a stop string (cut off) or after ``max_new_tokens``."""
        stops = [s for s in until if s]
        new: list[list[int]] = [[] for _ in prompts]
        texts = [""] * len(prompts)
        active = list(range(len(prompts)))
        for _ in range(max_new_tokens):
            if not active:
                break
            tokens = self._next_tokens([prompts[i] + new[i] for i in active])
            still = []
            for i, token in zip(active, tokens, strict=True):
                if token == self.eot_token_id:
                    continue
                new[i].append(token)
                texts[i] = self.tok_decode(new[i])
                if not any(stop in texts[i] for stop in stops):
                    still.append(i)
            active = still
        return [cut_at_stops(text, stops) for text in texts]

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        groups: dict[str, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            groups[json.dumps(request.args[1], sort_keys=True, default=str)].append(index)
        results: list[str | None] = [None] * len(requests)
        with tqdm(total=len(requests), disable=disable_tqdm, desc="mhmoe generate_until") as bar:
            for indices in groups.values():
                asked = requests[indices[0]].args[1]
                kwargs = normalize_gen_kwargs(asked, self.max_gen_toks)
                if kwargs.get("do_sample"):
                    raise ValueError(f"the mhmoe model decodes greedily only; the task asks for sampling {asked}")
                until = handle_stop_sequences(kwargs.get("until"), eos=None)
                prompts = {i: self.tok_encode(requests[i].args[0]) or [self.prefix_token_id] for i in indices}
                order = sorted(indices, key=lambda i: -len(prompts[i]))
                for start in range(0, len(order), self.batch_size):
                    chunk = order[start : start + self.batch_size]
                    outputs = self.greedy_generate([prompts[i] for i in chunk], kwargs["max_gen_toks"], until)
                    for i, text in zip(chunk, outputs, strict=True):
                        results[i] = text
                        self.cache_hook.add_partial("generate_until", requests[i].args, text)
                    bar.update(len(chunk))
        return results  # type: ignore[return-value]


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the earliest occurrence of any stop string."""
    cut = min((i for s in stops if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]
