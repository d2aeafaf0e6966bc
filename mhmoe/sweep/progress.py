"""What a running trial reports at each validation: an Optuna intermediate value and one log line.

The intermediate values are the dashboard's learning curves and what ``sweep status`` reads for
the step and latest value of a running trial; the line is the live progress of ``sweep run`` /
``sweep work``. A Lightning callback passed into :func:`mhmoe.training.runner.train`.
"""

from __future__ import annotations

from collections.abc import Callable

from lightning.pytorch.callbacks import Callback
from optuna.trial import FrozenTrial

from mhmoe.sweep.queue import SweepQueue
from mhmoe.training.callbacks import perf_metrics, validation_metrics
from mhmoe.training.failures import Fence


def progress_line(trial: FrozenTrial, step: int, total: int, metric: str, value: float | None,
                  tokens_per_s: float | None) -> str:
    """``trial 3 mhmoe-h2/seed=0: step 150/300 val/shakespeare/ppl=45.21 31.2k tokens/s``."""
    shown = "n/a" if value is None else f"{value:.4g}"
    rate = "" if tokens_per_s is None else f" {tokens_per_s / 1000:.1f}k tokens/s"
    return f"trial {trial.number} {trial.user_attrs.get('point', '?')}: step {step}/{total} {metric}={shown}{rate}"


class TrialProgress(Callback):
    """After each validation: the trial's metric as an Optuna intermediate value, and a progress line."""

    def __init__(self, queue: SweepQueue, trial: FrozenTrial, fence: Fence | None, log: Callable[[str], None]):
        self.queue, self.trial, self.fence, self.say = queue, trial, fence, log
        self.metric = str(trial.user_attrs["metric"])

    def on_validation_end(self, trainer, pl_module) -> None:  # noqa: ANN001 - Lightning hook
        if trainer.sanity_checking or (self.fence is not None and self.fence.lost.is_set()):
            return  # a lost claim's trial belongs to another worker: write nothing
        step = int(trainer.global_step)
        value = validation_metrics(trainer).get(self.metric)
        if value is not None:
            try:
                self.queue.storage.set_trial_intermediate_value(self.trial._trial_id, step, float(value))
            except Exception as err:  # noqa: BLE001 - a busy or finished trial must not stop training
                self.say(f"trial {self.trial.number}: intermediate value not stored: {err!r}")
        self.say(progress_line(self.trial, step, int(trainer.max_steps), self.metric, value,
                               perf_metrics(trainer).get("perf/tokens_per_s")))


__all__ = ["TrialProgress", "progress_line"]
