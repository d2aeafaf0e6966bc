"""Library chatter off: one place decides what Lightning, MLflow and torch may print during training.

Every fit prints Lightning's accelerator banners and tips, MLflow logs its database migrations,
and a torch/Lightning deprecation warning repeats per step. None of it is about the run; the
progress bar, our own lines and real warnings stay. ``--verbose`` skips this.
"""

from __future__ import annotations

import logging
import warnings

NOISY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "mlflow", "alembic")
NOISY_WARNINGS = (".*LeafSpec.*", ".*litlogger.*", ".*smaller than the logging interval.*")  # we log ourselves


def quiet_library_logs() -> None:
    # Both configure their loggers when first imported: import them first, or they undo this.
    import lightning.pytorch  # noqa: F401
    import mlflow  # noqa: F401

    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # Lightning's MLFlowLogger warns that it creates a missing experiment: that is what we asked for.
    logging.getLogger("lightning.pytorch.loggers.mlflow").setLevel(logging.ERROR)
