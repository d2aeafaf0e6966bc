"""mhmoe: an ablation harness for Multi-Head Mixture-of-Experts language models."""

__version__ = "0.1.0"
