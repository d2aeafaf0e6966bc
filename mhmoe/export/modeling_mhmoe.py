"""An mhmoe model as a Hugging Face ``transformers`` causal LM (``trust_remote_code``).

:func:`mhmoe.export.hf.export_checkpoint` copies this file into every exported folder, and
``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` imports it from there. It
wraps :class:`mhmoe.model.Transformer` itself, so it needs the ``mhmoe`` package installed and the
logits are mhmoe's by construction: the model code lives in one place (README, "Hugging Face export").

Only absolute imports here: ``transformers`` imports the copy as a module of its own cache.
Shape legend: B batch, T tokens, V vocabulary.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from mhmoe.config.architecture import Architecture
from mhmoe.config.base import from_dict, to_dict
from mhmoe.model import Transformer, build_model
from mhmoe.model.layers import rope_tables


class MHMoEConfig(PretrainedConfig):
    """The architecture (``model``/``moe``/``quant`` of the run config) plus the names HF tools read."""

    model_type = "mhmoe"

    def __init__(self, mhmoe_architecture: dict[str, Any] | None = None, context_length: int | None = None,
                 **kwargs: Any) -> None:
        """``mhmoe_architecture``: ``{"model": ..., "moe": ..., "quant": ...}`` as in a run config.
        ``context_length``: the length the model was trained on (``train.seq_len``), the context
        lm-eval and ``generate`` use by default, as the mhmoe adapter does."""
        self.mhmoe_architecture = mhmoe_architecture or {}
        if self.mhmoe_architecture:
            model = self.architecture().model
            kwargs.setdefault("vocab_size", model.vocab_size)
            kwargs.setdefault("hidden_size", model.d_model)
            kwargs.setdefault("num_hidden_layers", model.n_layers)
            kwargs.setdefault("num_attention_heads", model.n_heads)
            kwargs.setdefault("max_position_embeddings", context_length or model.max_seq_len)
        # No KV cache: every step of generate() runs the whole (windowed) sequence again.
        kwargs.setdefault("use_cache", False)
        # The LM head is the embedding table inside the mhmoe model (no separate weight to tie).
        kwargs["tie_word_embeddings"] = False
        super().__init__(**kwargs)

    def architecture(self) -> Architecture:
        """The validated mhmoe :class:`~mhmoe.config.architecture.Architecture`."""
        return from_dict(Architecture, self.mhmoe_architecture)

    @classmethod
    def of(cls, arch: Architecture, context_length: int, **kwargs: Any) -> MHMoEConfig:
        return cls(mhmoe_architecture=to_dict(arch), context_length=context_length, **kwargs)


class MHMoEForCausalLM(PreTrainedModel, GenerationMixin):
    """``forward(input_ids, attention_mask=None, labels=None)`` -> logits (and the LM loss)."""

    config_class = MHMoEConfig
    base_model_prefix = "net"
    main_input_name = "input_ids"
    _supports_attention_backend = False

    def __init__(self, config: MHMoEConfig, net: Transformer | None = None) -> None:
        super().__init__(config)
        self.net = net if net is not None else build_model(config.architecture())
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        # mhmoe's own constructors initialise the parameters. What transformers leaves to this hook
        # after loading are the RoPE tables (buffers recomputed from the config, never saved).
        if isinstance(module, Transformer):
            cfg = module.model_cfg
            cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
            with torch.no_grad():
                module.get_buffer("rope_cos").copy_(cos)
                module.get_buffer("rope_sin").copy_(sin)

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.net.tok_emb

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: Any) -> CausalLMOutput:
        logits_BTV = self.logits(input_ids, attention_mask)
        loss = None
        if labels is not None:  # HF convention: labels are the inputs, shifted here; -100 is ignored
            loss = F.cross_entropy(logits_BTV[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits_BTV)

    def logits(self, idx_BT: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, V) logits. mhmoe has no padding mask: a row with padding (left or right) runs on
        its own, on its real tokens only, at positions from 0, exactly as mhmoe scores it; so do all
        rows when capacity routing at eval makes tokens of one batch compete for expert slots."""
        limit = self.net.model_cfg.max_seq_len
        if idx_BT.shape[1] > limit:
            raise ValueError(f"{idx_BT.shape[1]} tokens exceed the model's max_seq_len={limit}; "
                             f"truncate the input (e.g. generate with max_length <= {limit})")
        padded = attention_mask is not None and not bool(attention_mask.all())
        if not padded and not self.net.moe_cfg.batch_dependent_at_eval:
            return self.net(idx_BT).logits
        mask_BT = torch.ones_like(idx_BT, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        out_BTV = None
        for row in range(idx_BT.shape[0]):
            kept_T = mask_BT[row].nonzero().squeeze(-1)
            if len(kept_T) == 0:
                continue
            if int(kept_T[-1] - kept_T[0]) + 1 != len(kept_T):
                raise ValueError("attention_mask must mark one contiguous run of tokens per row (left or right "
                                 "padding)")
            logits_TV = self.net(idx_BT[row : row + 1, kept_T]).logits[0]
            if out_BTV is None:
                out_BTV = logits_TV.new_zeros(*idx_BT.shape, logits_TV.shape[-1])
            out_BTV[row, kept_T] = logits_TV
        if out_BTV is None:
            raise ValueError("attention_mask masks every token")
        return out_BTV

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                                      **kwargs: Any) -> dict[str, Any]:
        # No cache: the whole sequence every step, its last max_position_embeddings tokens (mhmoe's window).
        window = self.config.max_position_embeddings
        mask = None if attention_mask is None else attention_mask[:, -window:]
        return {"input_ids": input_ids[:, -window:], "attention_mask": mask}


# save_pretrained copies this file next to the weights and points config.json's auto_map at it.
MHMoEConfig.register_for_auto_class()
MHMoEForCausalLM.register_for_auto_class("AutoModelForCausalLM")
