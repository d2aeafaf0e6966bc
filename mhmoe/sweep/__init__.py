"""Sweeps: a YAML spec expanded into grid points, queued in Optuna storage, trained by workers.

``spec`` parses and validates ``experiments/*.yaml``; ``plan`` expands it into trial points;
``queue`` enqueues and claims trials atomically (SQLite or PostgreSQL); ``worker`` trains them one
at a time in long-lived processes; ``launch`` starts one worker per device; ``status`` summarises.
"""

from mhmoe.sweep.plan import Plan, TrialPoint, expand, plan
from mhmoe.sweep.spec import SpecError, SweepSpec, load_spec

__all__ = ["Plan", "SpecError", "SweepSpec", "TrialPoint", "expand", "load_spec", "plan"]
