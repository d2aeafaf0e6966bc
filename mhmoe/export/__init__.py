"""Checkpoints out of mhmoe: the Hugging Face model folder (:mod:`mhmoe.export.hf`)."""
