"""Worker placement: one worker per GPU pinned by CUDA_VISIBLE_DEVICES, CPU workers share the cores."""

from __future__ import annotations

from pathlib import Path

from mhmoe.sweep.launch import available_cores, worker_slots
from mhmoe.sweep.options import WorkerOptions, parse


def test_one_pinned_worker_per_gpu() -> None:
    slots = worker_slots(["0", "1", "3"])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "3"]
    assert [s.name for s in slots] == ["gpu0", "gpu1", "gpu3"]


def test_cpu_workers_split_the_cores_and_hide_gpus() -> None:
    cores = available_cores()
    slots = worker_slots(cpu_workers=2)
    assert len(slots) == 2 and all(s.env["CUDA_VISIBLE_DEVICES"] == "" for s in slots)
    assert all(s.threads == max(1, cores // 2) and s.env["OMP_NUM_THREADS"] == str(s.threads) for s in slots)
    assert worker_slots()[0].threads == cores  # one worker gets every core


def test_worker_options_round_trip_through_the_spawned_command_line() -> None:
    """The spawned worker's argv and its parser both come from the WorkerOptions fields."""
    options = WorkerOptions(storage="sqlite:///q.db", study="s", tracking_uri="sqlite:///m.db",
                            checkpoint_root=Path("/ckpt"), max_trials=3, threads=2, linger=False, poll_s=0.5,
                            heartbeat_interval=7, grace_period=30, devices=2)
    assert parse(options.argv()) == options
    assert parse(["--storage", "u", "--study", "s"]) == WorkerOptions(storage="u", study="s")


def test_a_worker_killed_by_a_signal_exits_128_plus_the_signal() -> None:
    """``sweep work``/``run`` exit with the worst worker code; a signal N reads as 128 + N, as in a shell."""
    import signal
    import subprocess
    import sys

    from mhmoe.sweep.launch import wait_workers

    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    clean = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.send_signal(signal.SIGKILL)
    assert wait_workers([clean, killed]) == 128 + signal.SIGKILL
