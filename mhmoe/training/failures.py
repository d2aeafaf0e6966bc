"""Why a training attempt ended early, in one line, and the guard that stops a worker that lost its trial.

Every failure a user can see (the ``mhmoe.failure_reason`` MLflow tag, the Optuna trial's
``failure_reason`` attribute, the reason column of ``mhmoe sweep status``) is written from
:func:`failure_reason`, so the three always say the same thing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mhmoe.config.base import ConfigError
from mhmoe.store.atomic import DiskFull

REASON_MAX_CHARS = 500


class Diverged(RuntimeError):
    """A loss became NaN or infinite. Deterministic, so a sweep does not retry it."""

    def __init__(self, metric: str, value: float, step: int):
        self.metric, self.value, self.step = metric, value, step
        super().__init__(f"diverged: {metric} is {value} at step {step}")


class NoClusterEnvironment(ConfigError):
    """``train.num_nodes > 1`` with no cluster launcher to start the other nodes: Lightning would wait
    for them forever. Deterministic, so a sweep does not retry it; ``mhmoe train`` refuses it as bad input."""


class LostClaim(RuntimeError):
    """This worker no longer owns its trial (reaped as stale and re-queued): stop without writing."""


def failure_reason(err: BaseException) -> str:
    """``Type: first line of the message`` (the message alone for our own one-line errors)."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(err, (Diverged, LostClaim, NoClusterEnvironment, DiskFull)):
        return first[:REASON_MAX_CHARS]
    return f"{type(err).__name__}: {first}"[:REASON_MAX_CHARS] if first else type(err).__name__


class Fence:
    """A sweep worker's claim on its trial, as seen by the training loop.

    ``verify`` asks the queue whether the claim still holds (a storage read): it runs before every
    checkpoint write and on every heartbeat. The training loop only calls :meth:`poll` (a flag
    read), so the per-step cost is nil and a lost claim stops training within one heartbeat.
    """

    def __init__(self, verify: Callable[[], bool], what: str = "trial"):
        self._verify = verify
        self.what = what
        self.lost = threading.Event()

    def refresh(self) -> bool:
        """Re-check the claim (heartbeat thread); True while it holds."""
        if not self.lost.is_set() and not self._verify():
            self.lost.set()
        return not self.lost.is_set()

    def verify(self) -> None:
        """Raise :class:`LostClaim` unless the claim still holds (checked against storage now)."""
        if not self.refresh():
            raise LostClaim(f"lost claim: {self.what} was re-queued to another worker; stopped without writing")

    def poll(self) -> None:
        """Raise :class:`LostClaim` if a heartbeat already found the claim lost."""
        if self.lost.is_set():
            raise LostClaim(f"lost claim: {self.what} was re-queued to another worker; stopped without writing")


__all__ = ["Diverged", "DiskFull", "Fence", "LostClaim", "NoClusterEnvironment", "failure_reason"]
