"""The language model as plain ``nn.Module`` code (no Lightning): layers, routing, experts, the
MoE layer, the transformer and the BitNet converter. ``build_model`` is the one entry point."""

from mhmoe.model.transformer import FFN_REGISTRY, Transformer, build_model

__all__ = ["FFN_REGISTRY", "Transformer", "build_model"]
