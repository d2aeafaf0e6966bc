"""Sweep progress from the Optuna study: point counts, per-trial rows and an ETA."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime

from optuna.trial import FrozenTrial, TrialState

from mhmoe.sweep.queue import STALE_REASON, SweepQueue
from mhmoe.sweep.tables import format_table

POINT_STATES = ("done", "running", "waiting", "failed")
TRIAL_COLUMNS = ("trial", "point", "attempt", "state", "value", "steps", "seconds", "eta", "worker", "reason")
"""``value`` is headed by the sweep's metric name; for a running trial it is the latest validation
(its Optuna intermediate value) and ``steps`` the step reached of the total."""
REASON_COLUMN_CHARS = 80


@dataclass(frozen=True, kw_only=True)
class SweepStatus:
    """Counts per point state, one row per trial (attempt), and the estimated time left."""

    counts: dict[str, int]
    rows: list[dict[str, str]]
    stale: int
    """Running trials whose heartbeat is older than the grace period: their worker is gone."""
    eta_s: float | None
    """Seconds until the queue drains at the current worker count; None before any trial validated."""
    metric: str | None = None
    """The sweep's metric (the header of the value column)."""

    @property
    def finished(self) -> bool:
        return self.counts["running"] == 0 and self.counts["waiting"] == 0


def _seconds(trial: FrozenTrial, now: datetime) -> float | None:
    if trial.datetime_start is None:
        return None
    end = trial.datetime_complete or now
    return (end - trial.datetime_start).total_seconds()


def _total_steps(trial: FrozenTrial) -> int | None:
    steps = trial.user_attrs.get("config", {}).get("train", {}).get("max_steps")
    return int(steps) if steps else None


def trial_eta_s(trial: FrozenTrial, now: datetime) -> float | None:
    """Time left of a running trial at its rate so far (elapsed / steps reached); None before a validation."""
    seconds, total = _seconds(trial, now), _total_steps(trial)
    if trial.state != TrialState.RUNNING or not trial.intermediate_values or not seconds or not total:
        return None
    step = max(trial.intermediate_values)
    return seconds * max(0, total - step) / step if step > 0 else None


def _row(trial: FrozenTrial, now: datetime, stale: bool) -> dict[str, str]:
    attrs = trial.user_attrs
    seconds = _seconds(trial, now)
    steps, value, eta = "", trial.value, None
    if "final_step" in attrs:
        steps = f"{attrs.get('start_step', 0)}->{attrs['final_step']}"
    elif trial.state == TrialState.RUNNING and trial.intermediate_values:
        step = max(trial.intermediate_values)
        steps, value = f"{step}/{_total_steps(trial) or '?'}", trial.intermediate_values[step]
        eta = None if stale else trial_eta_s(trial, now)
    return {
        "trial": str(trial.number), "point": str(attrs.get("point", "?")), "attempt": str(attrs.get("attempt", 1)),
        "state": "STALE" if stale else trial.state.name, "value": "" if value is None else f"{value:.4g}",
        "steps": steps, "seconds": "" if seconds is None else f"{seconds:.0f}",
        "eta": "" if eta is None else _duration(eta), "worker": str(attrs.get("worker", "")),
        "reason": _reason(trial, stale)[:REASON_COLUMN_CHARS],
    }


def _reason(trial: FrozenTrial, stale: bool) -> str:
    """Why the attempt failed (or is about to be failed), else why it restarted from step 0."""
    if stale:
        return STALE_REASON
    if trial.state == TrialState.FAIL:
        return str(trial.user_attrs.get("failure_reason") or trial.user_attrs.get("error", "")).strip()
    return str(trial.user_attrs.get("restart_reason", ""))


def eta_seconds(trials: list[FrozenTrial], waiting: int, running: int, now: datetime | None = None) -> float | None:
    """(Time left of the running trials + waiting trials x mean trial time) / workers busy now.

    A running trial's time left is from its own rate (elapsed / steps reached at its latest
    validation); the mean trial time is of finished trials, else of the running ones so far
    (elapsed + time left), so an ETA shows as soon as one trial has validated.
    """
    now = now or datetime.now()
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                 if t.state == TrialState.COMPLETE and t.datetime_start and t.datetime_complete]
    live = [(t, trial_eta_s(t, now)) for t in trials if t.state == TrialState.RUNNING]
    known = [(t, eta) for t, eta in live if eta is not None]
    if not durations:
        durations = [(_seconds(t, now) or 0.0) + eta for t, eta in known]
    if not durations:
        return None if waiting or running else 0.0
    mean = statistics.fmean(durations)
    left = sum(eta for _, eta in known) + 0.5 * mean * max(0, running - len(known))
    return (left + mean * waiting) / max(1, running)


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
    live = [t for t in trials if t._trial_id not in stale]
    metric = queue.study.metric_names[0] if queue.study.metric_names else queue.settings().get("metric")
    return SweepStatus(counts=counts, rows=[_row(t, now, t._trial_id in stale) for t in trials], stale=len(stale),
                       eta_s=eta_seconds(live, waiting + len(stale), running - len(stale), now), metric=metric)


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
        header = status.metric or "value"
        rows = [{**{k: v for k, v in r.items() if k != "value"}, header: r["value"]} for r in status.rows]
        lines += ["", format_table(rows, tuple(header if c == "value" else c for c in TRIAL_COLUMNS))]
    return "\n".join(lines)


__all__ = ["SweepStatus", "eta_seconds", "format_status", "sweep_status"]
