"""Which queued trials a worker can run: those needing no more devices than it holds."""

from __future__ import annotations

from collections.abc import Callable

from optuna.trial import FrozenTrial, TrialState


def trial_devices(trial: FrozenTrial) -> tuple[int, int]:
    """(train.devices, train.num_nodes) of a queued trial's resolved config."""
    train = trial.user_attrs.get("config", {}).get("train", {})
    return int(train.get("devices", 1)), int(train.get("num_nodes", 1))


class DeviceFit:
    """``accepts`` filter for :meth:`SweepQueue.claim`; says once per trial why it leaves one queued."""

    def __init__(self, held: int, say: Callable[[str], None]) -> None:
        self.held, self.say = held, say
        self._told: set[int] = set()

    def __call__(self, trial: FrozenTrial) -> bool:
        devices, nodes = trial_devices(trial)
        if nodes == 1 and devices <= self.held:
            return True
        if trial.number not in self._told:
            self._told.add(trial.number)
            need = f"train.devices={devices}" + (f" x train.num_nodes={nodes}" if nodes > 1 else "")
            self.say(f"trial {trial.number} {trial.user_attrs.get('point', '')} needs {need} but this worker holds "
                     f"{self.held} device(s) on one node; left queued for a bigger worker (--devices-per-trial)")
        return False

    def waiting(self, queue) -> int:  # noqa: ANN001 - SweepQueue
        """WAITING trials this worker could claim."""
        return sum(self(t) for t in queue.trials((TrialState.WAITING,)))
