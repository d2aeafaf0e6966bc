"""Library chatter off: one place decides what Lightning, MLflow and torch may print during training.

Every fit prints Lightning's accelerator banners and tips, MLflow logs its database migrations,
and a torch/Lightning deprecation warning repeats per step. None of it is about the run; the
progress bar, our own lines and real warnings stay. ``--verbose`` skips this.
"""

from __future__ import annotations

import logging
import os
import warnings

NOISY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "mlflow", "alembic")
NOISY_WARNINGS = (".*LeafSpec.*", ".*litlogger.*", ".*smaller than the logging interval.*")  # we log ourselves
QUIET_ENV = "MHMOE_QUIET_LIBRARIES"
"""Set once quiet: the data-parallel rank processes this process starts (they inherit the environment)
are quiet too (:func:`quiet_if_parent_was`)."""


def quiet_library_logs() -> None:
    # Both configure their loggers when first imported: import them first, or they undo this.
    import lightning.pytorch  # noqa: F401
    import mlflow  # noqa: F401

    os.environ[QUIET_ENV] = "1"
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # Lightning's MLFlowLogger warns that it creates a missing experiment: that is what we asked for.
    logging.getLogger("lightning.pytorch.loggers.mlflow").setLevel(logging.ERROR)


def quiet_if_parent_was() -> None:
    """In a rank process: as quiet as the command that started it."""
    if os.environ.get(QUIET_ENV) == "1":
        quiet_library_logs()
