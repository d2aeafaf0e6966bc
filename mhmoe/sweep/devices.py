"""Which queued trials a worker can run: those needing no more devices than it holds, on one node."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from optuna.trial import FrozenTrial, TrialState

MULTI_NODE_HINT = ("a sweep worker trains on one node (train.num_nodes=1); train a multi-node run with "
                   "`mhmoe train` under a cluster launcher (srun, torchrun)")


def trial_devices(trial: FrozenTrial) -> tuple[int, int]:
    """(train.devices, train.num_nodes) of a queued trial's resolved config."""
    train = trial.user_attrs.get("config", {}).get("train", {})
    return int(train.get("devices", 1)), int(train.get("num_nodes", 1))


def fits(devices: int, nodes: int, held: int) -> bool:
    """Whether a worker holding ``held`` devices on one node can train ``devices`` x ``nodes``."""
    return nodes == 1 and devices <= held


def need(devices: int, nodes: int) -> str:
    return f"train.devices={devices}" + (f" x train.num_nodes={nodes}" if nodes > 1 else "")


def gpu_worker_flags(devices: int) -> str:
    """The ``sweep work``/``run`` flags for workers that hold ``devices`` GPUs each."""
    flags = f"--devices {','.join(str(i) for i in range(devices))}"
    return flags + (f" --devices-per-trial {devices}" if devices > 1 else "")


def bigger_worker_hint(devices: int) -> str:
    """How to start workers that hold ``devices`` devices each (see :func:`mhmoe.sweep.launch.worker_slots`)."""
    return f"start workers with {gpu_worker_flags(devices)} (GPUs) or --devices-per-trial {devices} (CPU ranks)"


def unfit_summary(needs: Iterable[tuple[str, int, int]], held: int) -> str | None:
    """One clause for the (label, devices, nodes) that a worker holding ``held`` devices cannot take,
    grouped by need, with the hint that fixes it; None when every one fits."""
    by_need: dict[tuple[int, int], list[str]] = {}
    for label, devices, nodes in needs:
        if not fits(devices, nodes, held):
            by_need.setdefault((devices, nodes), []).append(label)
    if not by_need:
        return None
    parts = [f"point {labels[0]}" + (f" (and {len(labels) - 1} more)" if len(labels) > 1 else "")
             + f" {'needs' if len(labels) == 1 else 'need'} {need(*key)}" for key, labels in sorted(by_need.items())]
    single = [devices for devices, nodes in by_need if nodes == 1]
    hints = ([bigger_worker_hint(max(single))] if single else []) + \
        ([MULTI_NODE_HINT] if len(single) < len(by_need) else [])
    return f"{'; '.join(parts)}; each worker here holds {held} device(s) on one node; {'; '.join(hints)}"


class DeviceFit:
    """``accepts`` filter for :meth:`SweepQueue.claim`; says once per trial why it leaves one queued."""

    def __init__(self, held: int, say: Callable[[str], None]) -> None:
        self.held, self.say = held, say
        self._told: set[int] = set()

    def __call__(self, trial: FrozenTrial) -> bool:
        devices, nodes = trial_devices(trial)
        if fits(devices, nodes, self.held):
            return True
        if trial.number not in self._told:
            self._told.add(trial.number)
            self.say(f"trial {trial.number} {trial.user_attrs.get('point', '')} needs {need(devices, nodes)} but "
                     f"this worker holds {self.held} device(s) on one node; left queued for a bigger worker "
                     "(--devices-per-trial)")
        return False

    def waiting(self, queue) -> int:  # noqa: ANN001 - SweepQueue
        """WAITING trials this worker could claim."""
        return sum(self(t) for t in queue.trials((TrialState.WAITING,)))


def stranded(queue, held: int) -> str | None:  # noqa: ANN001 - SweepQueue
    """Why workers holding ``held`` devices would wait for nothing: trials wait, none fits, and none runs
    (no trial end can add work or free a bigger worker's trial); None otherwise."""
    waiting, running = queue.pending()
    if not waiting or running:
        return None
    trials = queue.trials((TrialState.WAITING,))
    needs = [(str(t.user_attrs.get("point", t.number)), *trial_devices(t)) for t in trials]
    if any(fits(devices, nodes, held) for _, devices, nodes in needs):
        return None
    return f"{len(trials)} waiting point(s) that no worker here can take: {unfit_summary(needs, held)}"
