"""Data-parallel runs: ``train()`` moves into rank processes that Lightning's DDP launcher can re-run.

Lightning's DDP launcher starts ranks 1..N-1 by re-running the current command with ``LOCAL_RANK``
set. The command that called ``train()`` may be a sweep worker, which must not run twice, so a
multi-device ``train()`` runs ``python -m mhmoe.training.rank_process REQUEST`` instead: that process
is rank 0 and the command Lightning re-runs. Rank 0 opens the MLflow run and exports its id and
checkpoint folder in the environment before ``trainer.fit``, so the other ranks (started from that
environment) use the same ones; only rank 0 talks to MLflow and writes checkpoints. The caller gets
the rank-0 ``TrainResult`` back through a JSON file.

Every rank dies with the process that started it (:func:`die_with_parent`): a SIGKILLed sweep
worker leaves no rank training on until another worker reaps its trial.

A caller's fence and callbacks are objects and cannot cross into the rank processes. The caller's
process keeps its fence (its heartbeat refreshes it) and stops the ranks the moment the claim is
lost; rank 0 rebuilds its own fence and callbacks from a :class:`RankZeroHooks` recipe (a sweep
worker's: the trial's claim, checked against the queue before every checkpoint write, and the
per-validation progress report).

Under an external launcher (``srun`` with one task per rank, ``torchrun``) every task already is a
rank: ``train()`` runs in place (pass an explicit checkpoint folder, shared by the ranks).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mhmoe.config.import_path import resolve
from mhmoe.tracking.provenance import COMMAND_ENV, command_line
from mhmoe.training.failures import Fence
from mhmoe.training.result import TrainResult

IN_RANKS_ENV = "MHMOE_IN_RANK_PROCESSES"
RUN_ID_ENV = "MHMOE_RANK0_RUN_ID"
CHECKPOINT_DIR_ENV = "MHMOE_RANK0_CHECKPOINT_DIR"
PARENT_PID_ENV = "MHMOE_RANK_PARENT_PID"
"""The pid a rank process was started by (the caller for rank 0, rank 0 for the others)."""
PR_SET_PDEATHSIG = 1
"""prctl option (linux/prctl.h): the signal this process gets when its parent exits."""


STOP_POLL_S = 0.5
"""How often the caller's process checks its fence while the ranks train."""
STOP_GRACE_S = 10.0
"""How long stopped ranks may take to exit on SIGTERM before they are killed."""


@dataclass(frozen=True)
class RankZeroHooks:
    """How rank 0 rebuilds a caller's fence and extra callbacks: ``factory`` (``module:function``)
    called with ``payload`` (JSON values) returns ``(fence or None, callbacks)``."""

    factory: str
    payload: dict[str, Any] = field(default_factory=dict)

    def build(self) -> tuple[Fence | None, list]:
        fence, callbacks = resolve(self.factory)(**self.payload)
        return fence, list(callbacks)


def parent_death_signal(sig: int) -> None:
    """Linux: have the kernel send ``sig`` to this process when its parent exits; elsewhere nothing."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def die_with_parent() -> None:
    """Linux: SIGKILL this rank the moment the process that started it exits, even by SIGKILL.

    The parent's pid comes from the environment, not ``os.getppid()`` now: a parent that died
    before ``prctl`` took effect is noticed (this process was re-parented) and we exit at once.
    The ranks this process starts (Lightning's launcher copies the environment) die with it in turn.
    """
    expected = int(os.environ.get(PARENT_PID_ENV) or 0)
    parent_death_signal(signal.SIGKILL)
    if expected and os.getppid() != expected:
        os._exit(1)
    os.environ[PARENT_PID_ENV] = str(os.getpid())


def launched_as_rank() -> bool:
    """True inside rank processes: ours, or an external launcher's (torchrun, srun tasks)."""
    if os.environ.get(IN_RANKS_ENV) == "1" or "TORCHELASTIC_RUN_ID" in os.environ:
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ


def global_rank() -> int:
    """This process's rank as the launchers set it in the environment (0 when not launched)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def share_with_ranks(run_id: str | None, checkpoint_dir: Path) -> None:
    """Rank 0: the run and folder the ranks Lightning starts next will inherit (None off rank 0
    under an external launcher, whose ranks share nothing but ``--checkpoint-dir``)."""
    if run_id is None:
        return
    os.environ[RUN_ID_ENV] = run_id
    os.environ[CHECKPOINT_DIR_ENV] = str(checkpoint_dir)


def inherited_run(run_id: str | None, checkpoint_dir: Path | None) -> tuple[str | None, Path | None]:
    """Ranks > 0: rank 0's run id and checkpoint folder unless given."""
    folder = os.environ.get(CHECKPOINT_DIR_ENV)
    return run_id or os.environ.get(RUN_ID_ENV), checkpoint_dir or (Path(folder) if folder else None)


def train_in_rank_processes(cfg, *, fence: Fence | None = None, rank_zero_hooks: RankZeroHooks | None = None,
                            **kwargs: Any) -> TrainResult:  # noqa: ANN001 - RunConfig
    """Run ``train()`` of ``cfg`` as rank 0 of a data-parallel job in a child process; ``kwargs`` are
    the request's plain fields (:meth:`~mhmoe.training.request.TrainRequest.rank_fields`).

    ``fence`` stays here: once it is lost the ranks are stopped and :class:`LostClaim` is raised.
    ``rank_zero_hooks`` gives rank 0 its own fence and callbacks.
    """
    with tempfile.TemporaryDirectory(prefix="mhmoe-ranks-") as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        payload = {k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()}
        hooks = asdict(rank_zero_hooks) if rank_zero_hooks else None
        request.write_text(json.dumps({"config": cfg.to_dict(), "kwargs": payload, "hooks": hooks,
                                       "result": str(result)}))
        # Same process group: a job-wide kill (SLURM, killpg) reaches every rank. On SIGTERM, rank 0's
        # Lightning signal handler kills the ranks it started.
        proc = subprocess.Popen([sys.executable, "-m", "mhmoe.training.rank_process", str(request)],
                                env={**os.environ, IN_RANKS_ENV: "1", PARENT_PID_ENV: str(os.getpid()),
                                     COMMAND_ENV: command_line()})
        try:
            code = _wait_unless_fenced(proc, fence)
        except BaseException:
            _stop(proc)
            raise
        if code != 0 or not result.is_file():
            raise RuntimeError(f"data-parallel training ({cfg.train.world_size} ranks) exited with code {code}")
        return TrainResult.from_json(result.read_text())


def _wait_unless_fenced(proc: subprocess.Popen, fence: Fence | None) -> int:
    """The ranks' exit code; raises :class:`LostClaim` (the caller stops them) once ``fence`` is lost."""
    while True:
        try:
            return proc.wait(timeout=STOP_POLL_S)
        except subprocess.TimeoutExpired:
            if fence is not None:
                fence.poll()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM rank 0 (Lightning's handler passes it on to the ranks it started), then SIGKILL every
    rank still alive after ``STOP_GRACE_S``: a rank blocked in a collective whose peer already
    exited would otherwise wait for the process group's timeout (30 minutes)."""
    import psutil

    try:
        ranks = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        ranks = []
    proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_GRACE_S)
    for rank in ranks:
        with contextlib.suppress(psutil.NoSuchProcess):
            rank.kill()
    proc.wait()
