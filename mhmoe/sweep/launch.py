"""Start one long-lived worker process per device and wait for them.

CPU workers: the supervisor imports torch / Lightning / MLflow once and then forks them, so N
workers cost one import (~6 s on 2 cores) instead of N competing ones; they split the cores evenly
(``torch.set_num_threads`` + the OpenMP/MKL variables) and see no GPU. GPU workers start as
``python -m mhmoe.sweep.worker`` with ``CUDA_VISIBLE_DEVICES`` set to their device (CUDA is not
fork-safe), as do all workers where fork is missing. With ``devices_per_trial`` > 1 a GPU worker
holds that many consecutive devices (``CUDA_VISIBLE_DEVICES=0,1``) and trains DDP trials on them. Each worker dies with
the supervisor (``PR_SET_PDEATHSIG``) and gets SIGTERM/SIGINT forwarded, which re-queues its
running trial; workers on other nodes run the same command against the same storage.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mhmoe.config.base import ConfigError
from mhmoe.sweep.options import WorkerOptions
from mhmoe.sweep.worker_log import CONSOLE_FD_ENV
from mhmoe.training.ranks import parent_death_signal

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True, kw_only=True)
class WorkerSlot:
    """Where one worker runs."""

    name: str
    """``gpu<i>`` or ``cpu<i>``."""
    env: dict[str, str]
    """Environment the worker sets before touching torch (device pinning, thread counts)."""
    threads: int
    devices: int = 1
    """Devices the worker holds: the largest ``train.devices`` it accepts."""


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_slots(devices: list[str] | None = None, cpu_workers: int | None = None,
                 devices_per_trial: int = 1) -> list[WorkerSlot]:
    """One slot per ``devices_per_trial`` listed GPUs (consecutive), else ``cpu_workers`` CPU slots
    (default 1) sharing the cores, each holding ``devices_per_trial`` CPU ranks."""
    if devices_per_trial < 1 or (devices and len(devices) % devices_per_trial):
        raise ConfigError(f"--devices-per-trial={devices_per_trial} must be >= 1 and divide the number of "
                          f"--devices ({len(devices or [])})")
    cores = available_cores()
    n = len(devices) // devices_per_trial if devices else max(1, cpu_workers or 1)
    threads = max(1, cores // n)
    common = {var: str(threads) for var in THREAD_VARS}
    if devices:
        groups = [devices[i : i + devices_per_trial] for i in range(0, len(devices), devices_per_trial)]
        return [WorkerSlot(name=f"gpu{'+'.join(g)}", env={**common, "CUDA_VISIBLE_DEVICES": ",".join(g)},
                           threads=threads, devices=devices_per_trial) for g in groups]
    return [WorkerSlot(name=f"cpu{i}", env={**common, "CUDA_VISIBLE_DEVICES": ""}, threads=threads,
                       devices=devices_per_trial) for i in range(n)]


def _redirect(log: Path | None) -> None:
    """Everything the worker writes goes to ``log``; the console keeps its progress lines
    (:data:`mhmoe.sweep.worker.CONSOLE_FD_ENV`), so a ``--log-dir`` run is not silent until the end."""
    if log is None:
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    os.environ[CONSOLE_FD_ENV] = str(os.dup(1))
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream in (1, 2):
        os.dup2(fd, stream)


def _forked_worker(options: WorkerOptions, slot: WorkerSlot, log: Path | None) -> None:
    """Child side of the fork: pin, redirect, serve, and leave without the parent's atexit hooks."""
    from mhmoe.sweep.worker import serve

    code = 1
    try:
        parent_death_signal(signal.SIGTERM)  # the supervisor died: stop, so no worker is orphaned
        os.environ.update(slot.env)
        _redirect(log)
        code = serve(dataclasses.replace(options, threads=slot.threads, devices=slot.devices))
    except BaseException:  # noqa: BLE001 - os._exit below skips the interpreter's own traceback print
        traceback.print_exc()
        print(f"[sweep worker {os.getpid()}] died; its trial (if any) is re-queued after the grace period",
              file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class _Fork:
    """A forked worker with the bits of ``subprocess.Popen`` the supervisor uses."""

    def __init__(self, options: WorkerOptions, slot: WorkerSlot, log: Path | None):
        self.pid = os.fork()
        if self.pid == 0:
            _forked_worker(options, slot, log)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            except InterruptedError:
                continue
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)


def _spawned(options: WorkerOptions, slot: WorkerSlot, log: Path | None) -> subprocess.Popen:
    worker = dataclasses.replace(options, threads=slot.threads, devices=slot.devices)
    cmd = [sys.executable, "-m", "mhmoe.sweep.worker", *worker.argv()]
    env = {**os.environ, **slot.env, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    if log is None:
        return subprocess.Popen(cmd, env=env)
    log.parent.mkdir(parents=True, exist_ok=True)
    console = os.dup(sys.stdout.fileno())  # the progress lines also reach the console (see _redirect)
    try:
        with open(log, "a") as out:
            return subprocess.Popen(cmd, env={**env, CONSOLE_FD_ENV: str(console)}, stdout=out,
                                    stderr=subprocess.STDOUT, pass_fds=(console,))
    finally:
        os.close(console)


def start_workers(options: WorkerOptions, slots: list[WorkerSlot], *, log_dir: Path | None = None) -> list:
    """Fork (CPU) or spawn (GPU) one worker per slot. Open no database connection in this process first."""
    logs = [log_dir / f"worker-{slot.name}.log" if log_dir else None for slot in slots]
    gpu = any(slot.env.get("CUDA_VISIBLE_DEVICES") for slot in slots)
    if gpu or not hasattr(os, "fork"):
        # CUDA must not be initialised before a fork, and each GPU worker pins its device before
        # torch starts: GPU workers import on their own (nodes with GPUs have cores to spare).
        return [_spawned(options, slot, log) for slot, log in zip(slots, logs)]
    from mhmoe.sweep.worker import preload

    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU workers: nothing imported below may see a GPU
    preload()
    sys.stdout.flush()
    sys.stderr.flush()
    return [_Fork(options, slot, log) for slot, log in zip(slots, logs)]


def wait_workers(procs: list) -> int:
    """Wait for every worker, forwarding SIGTERM/SIGINT; the worst exit code wins, a worker killed by
    signal N counting as 128 + N (as a shell reports it; 143 for SIGTERM)."""

    def forward(signum: int, frame: Any) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [proc.wait() for proc in procs]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max((128 - c if c < 0 else c for c in codes), default=0)


def run_workers(options: WorkerOptions, slots: list[WorkerSlot], *, log_dir: Path | None = None) -> int:
    print(f"starting {len(slots)} worker(s): " + ", ".join(f"{s.name} ({s.threads} threads)" for s in slots),
          flush=True)
    procs = start_workers(options, slots, log_dir=log_dir)
    code = wait_workers(procs)
    for slot, proc in zip(slots, procs):
        if proc.returncode:
            where = f"; its log: {log_dir / f'worker-{slot.name}.log'}" if log_dir else " (output above)"
            print(f"worker {slot.name} exited with code {proc.returncode}{where}", file=sys.stderr, flush=True)
    return code


__all__ = ["WorkerSlot", "available_cores", "run_workers", "start_workers", "wait_workers", "worker_slots"]
