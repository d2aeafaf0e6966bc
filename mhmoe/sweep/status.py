"""Sweep progress from the Optuna study: point counts, per-trial rows and an ETA."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime

from optuna.trial import FrozenTrial, TrialState

from mhmoe.sweep.plan import format_table
from mhmoe.sweep.queue import STALE_REASON, SweepQueue

POINT_STATES = ("done", "running", "waiting", "failed")
TRIAL_COLUMNS = ("trial", "point", "attempt", "state", "value", "steps", "seconds", "worker", "reason")
REASON_COLUMN_CHARS = 80


@dataclass(frozen=True, kw_only=True)
class SweepStatus:
    """Counts per point state, one row per trial (attempt), and the estimated time left."""

    counts: dict[str, int]
    rows: list[dict[str, str]]
    stale: int
    """Running trials whose heartbeat is older than the grace period: their worker is gone."""
    eta_s: float | None
    """Seconds until the queue drains at the current worker count; None before a trial finished."""

    @property
    def finished(self) -> bool:
        return self.counts["running"] == 0 and self.counts["waiting"] == 0


def _seconds(trial: FrozenTrial, now: datetime) -> float | None:
    if trial.datetime_start is None:
        return None
    end = trial.datetime_complete or now
    return (end - trial.datetime_start).total_seconds()


def _row(trial: FrozenTrial, now: datetime, stale: bool) -> dict[str, str]:
    attrs = trial.user_attrs
    seconds = _seconds(trial, now)
    steps = ""
    if "final_step" in attrs:
        steps = f"{attrs.get('start_step', 0)}->{attrs['final_step']}"
    return {
        "trial": str(trial.number), "point": str(attrs.get("point", "?")), "attempt": str(attrs.get("attempt", 1)),
        "state": "STALE" if stale else trial.state.name, "value": "" if trial.value is None else f"{trial.value:.4g}",
        "steps": steps, "seconds": "" if seconds is None else f"{seconds:.0f}", "worker": str(attrs.get("worker", "")),
        "reason": _reason(trial, stale)[:REASON_COLUMN_CHARS],
    }


def _reason(trial: FrozenTrial, stale: bool) -> str:
    """Why the attempt failed (or is about to be failed), else why it restarted from step 0."""
    if stale:
        return STALE_REASON
    if trial.state == TrialState.FAIL:
        return str(trial.user_attrs.get("failure_reason") or trial.user_attrs.get("error", "")).strip()
    return str(trial.user_attrs.get("restart_reason", ""))


def eta_seconds(trials: list[FrozenTrial], waiting: int, running: int) -> float | None:
    """Mean finished-trial time x queued work / workers busy now (at least one)."""
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                 if t.state == TrialState.COMPLETE and t.datetime_start and t.datetime_complete]
    if not durations:
        return None if waiting or running else 0.0
    mean = statistics.fmean(durations)
    return mean * (waiting + 0.5 * running) / max(1, running)


def sweep_status(queue: SweepQueue) -> SweepStatus:
    """Read-only: stale trials are shown as such (from their heartbeats), not reaped."""
    now = datetime.now()
    trials = queue.trials()
    stale = queue.stale_trial_ids()
    counts = {state: 0 for state in POINT_STATES}
    for point in queue.point_states():
        counts[point.state] += 1
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return SweepStatus(counts=counts, rows=[_row(t, now, t._trial_id in stale) for t in trials], stale=len(stale),
                       eta_s=eta_seconds(trials, waiting + len(stale), running - len(stale)))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def format_status(name: str, status: SweepStatus, *, show_rows: bool = True) -> str:
    counts = ", ".join(f"{status.counts[s]} {s}" + (f" ({status.stale} stale: worker gone, re-queued at the next claim)"
                                                     if s == "running" and status.stale else "")
                       for s in POINT_STATES)
    eta = "done" if status.finished else ("unknown" if status.eta_s is None else _duration(status.eta_s))
    lines = [f"sweep {name}: {sum(status.counts.values())} points: {counts}; ETA {eta}"]
    if show_rows and status.rows:
        lines += ["", format_table(status.rows, TRIAL_COLUMNS)]
    return "\n".join(lines)


__all__ = ["SweepStatus", "eta_seconds", "format_status", "sweep_status"]
