"""What ``sweep submit``, ``run`` and ``extend`` check before anything is created: that workers can run
every point.

The spec parser and the planner decide whether the points are well formed; these checks ask this
machine and the stores whether the points can run: their data and tokenizer files exist and load,
their eval tasks resolve (and run no code without consent), the tracking store answers, and a worker
holds the devices each point needs. A problem refuses the command, one line each; a warning (a point
this machine could not train, submitted for workers elsewhere) is printed and the submit goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mhmoe.sweep.devices import MULTI_NODE_HINT, gpu_worker_flags, need, unfit_summary
from mhmoe.sweep.launch import WorkerSlot
from mhmoe.sweep.plan import TrialPoint, data_problems, eval_task_problems
from mhmoe.sweep.spec import SweepSpec

GPU_ACCELERATORS = ("gpu", "cuda")


@dataclass(frozen=True)
class SubmitCheck:
    """What :func:`submit_problems` found."""

    problems: tuple[str, ...] = ()
    """Each refuses the submit (one line each)."""
    warnings: tuple[str, ...] = ()
    """Printed as ``warning:`` lines; the submit goes on."""


def file_problems(spec: SweepSpec, points: Sequence[TrialPoint]) -> list[str]:
    """The checks of files on this machine (data, tokenizers, task YAMLs that may run code): ``sweep plan``
    warns about these, ``submit`` refuses them."""
    return data_problems(list(points)) + eval_task_problems(spec)


def submit_problems(spec: SweepSpec, points: Sequence[TrialPoint], *, tracking_uri: str,
                    slots: Sequence[WorkerSlot] | None = None) -> SubmitCheck:
    """Every check a submit makes before it opens the study. ``slots``: the local workers ``sweep run``/
    ``extend`` will start (a point none of them can take is a problem); None for ``sweep submit``, whose
    workers may start on other machines (a point this machine cannot train is a warning)."""
    task_files = eval_task_problems(spec)  # names are resolved once the task files are fine
    problems = data_problems(list(points)) + (task_files or eval_name_problems(spec)) + tracking_problems(tracking_uri)
    if slots is not None:
        return SubmitCheck(problems=tuple(problems + slot_problems(points, slots)))
    return SubmitCheck(problems=tuple(problems), warnings=tuple(machine_warnings(points)))


def eval_name_problems(spec: SweepSpec) -> list[str]:
    """``eval.tasks`` names lm-eval does not know (the TaskManager is only built when the spec lists tasks)."""
    if not spec.eval_tasks:
        return []
    from mhmoe.evaluation.runner import split_tasks
    from mhmoe.evaluation.task_manager import EvalError, check_task_names

    try:
        check_task_names(split_tasks(spec.eval_tasks))
    except EvalError as err:
        return [f"eval.tasks: {err}"]
    return []


def tracking_problems(tracking_uri: str) -> list[str]:
    """The tracking server or database store does not answer (local stores are not asked)."""
    from mhmoe.store.urls import StoreError, check_tracking_reachable

    try:
        check_tracking_reachable(tracking_uri)
    except StoreError as err:
        return [str(err)]
    return []


def slot_problems(points: Sequence[TrialPoint], slots: Sequence[WorkerSlot]) -> list[str]:
    """Points that none of the local workers can take: more devices or nodes than a worker holds, or
    GPUs when every worker is a CPU worker."""
    held = max(slot.devices for slot in slots)
    problems = []
    gpu = [p for p in points if p.config.train.accelerator in GPU_ACCELERATORS]
    if gpu and not any(slot.env.get("CUDA_VISIBLE_DEVICES") for slot in slots):
        devices = max(p.config.train.devices for p in gpu)
        problems.append(f"point {_labels(gpu)} needs GPUs (train.accelerator={gpu[0].config.train.accelerator}) "
                        f"but the workers here are CPU workers; pass {gpu_worker_flags(devices)}")
        points = [p for p in points if p.config.train.accelerator not in GPU_ACCELERATORS]  # covered above
    unfit = unfit_summary(((p.label, p.config.train.devices, p.config.train.num_nodes) for p in points), held)
    return problems + ([unfit] if unfit else [])


def machine_warnings(points: Sequence[TrialPoint]) -> list[str]:
    """One line when this machine cannot train some points (more GPUs than it has, or more than one
    node): normal when submitting from a login node to GPU workers, so a warning."""
    parts = []
    multi_node = [p for p in points if p.config.train.num_nodes > 1]
    if multi_node:
        train = multi_node[0].config.train
        parts.append(f"point {_labels(multi_node)} needs {need(train.devices, train.num_nodes)}: {MULTI_NODE_HINT}")
    wanting = [p for p in points if p.config.train.num_nodes == 1 and _wants_gpus(p)]
    gpus = _gpu_count() if wanting else 0
    short = [p for p in wanting if p.config.train.devices > gpus
             and (p.config.train.accelerator in GPU_ACCELERATORS or gpus > 0)]  # auto without GPUs: CPU ranks
    if short:
        devices = max(p.config.train.devices for p in short)
        parts.append(f"point {_labels(short)} needs {devices} GPU(s) ({need(devices, 1)}) and this machine has "
                     f"{gpus}; start its workers where the GPUs are (`mhmoe sweep work SPEC "
                     f"{gpu_worker_flags(devices)}`)")
    return ["; ".join(parts)] if parts else []


def _wants_gpus(point: TrialPoint) -> bool:
    """Trains on GPUs where there are any: accelerator gpu/cuda, or auto with more than one device."""
    train = point.config.train
    return train.accelerator in GPU_ACCELERATORS or (train.accelerator == "auto" and train.devices > 1)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def _labels(points: Sequence[TrialPoint]) -> str:
    return points[0].label + (f" (and {len(points) - 1} more)" if len(points) > 1 else "")


__all__ = ["SubmitCheck", "eval_name_problems", "file_problems", "machine_warnings", "slot_problems",
           "submit_problems", "tracking_problems"]
