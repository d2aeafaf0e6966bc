"""Frozen, validated configuration: the components, the run, presets, the variant registry, input checks."""
