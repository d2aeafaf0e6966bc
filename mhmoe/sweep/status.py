"""Sweep progress from the Optuna study: point counts, per-trial rows and an ETA."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime

from optuna.trial import FrozenTrial, TrialState

from mhmoe.sweep.queue import STALE_REASON, SweepQueue
from mhmoe.text_table import format_table

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
    may_grow: bool = False
    """The sweep tunes or adds seeds as results come in: the ETA covers only the points queued now."""

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


def _attempt_steps(trial: FrozenTrial) -> int | None:
    """Steps a finished attempt trained (a resumed attempt starts past step 0)."""
    attrs = trial.user_attrs
    if "final_step" not in attrs:
        return None
    return int(attrs["final_step"]) - int(attrs.get("start_step", 0))


def _seconds_per_step(trials: list[FrozenTrial]) -> dict[str | None, float]:
    """Seconds per training step of the finished attempts, per group (``None``: all groups).

    Per step, not per trial: a token-budget ladder's rungs differ in steps by 10x, and per group
    because variants differ in step cost (an MH-MoE step costs more than a dense one).
    """
    totals: dict[str | None, list[float]] = {}
    for t in trials:
        steps = _attempt_steps(t)
        if t.state != TrialState.COMPLETE or not t.datetime_start or not t.datetime_complete or not steps:
            continue
        seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        for key in (None, t.user_attrs.get("group")):
            total = totals.setdefault(key, [0.0, 0.0])
            total[0] += seconds
            total[1] += steps
    return {key: seconds / steps for key, (seconds, steps) in totals.items()}


WORKER_GAP_S = 60.0
"""A worker that ended a trial this recently is between trials (claiming the next), not gone."""


def active_workers(trials: list[FrozenTrial], now: datetime) -> int:
    """Workers serving the queue now: those holding a trial, and those that ended one within
    :data:`WORKER_GAP_S`. Counting running trials alone halves the throughput of two workers whenever
    one of them is between trials, which is exactly when a worker prints the ETA."""
    holding = {t.user_attrs.get("worker") or f"trial {t.number}" for t in trials if t.state == TrialState.RUNNING}
    between = {t.user_attrs["worker"] for t in trials
               if t.state in (TrialState.COMPLETE, TrialState.FAIL) and t.user_attrs.get("worker")
               and t.datetime_complete and (now - t.datetime_complete).total_seconds() <= WORKER_GAP_S}
    return len(holding | between)


def eta_seconds(
    trials: list[FrozenTrial], waiting: list[FrozenTrial], running: int, now: datetime | None = None,
    workers: int | None = None,
) -> float | None:
    """(Time left of the running trials + time of the waiting ones) / workers serving the queue
    (``workers``, default :func:`active_workers`; at least ``running``), and never less than the
    longest running trial's time left.

    A running trial's time left is from its own rate (elapsed / steps reached at its latest
    validation). A waiting trial takes its steps x the seconds per step of its group's finished
    trials (of all finished trials when its group has none); before any trial finished, the
    running trials' rates so far stand in, so an ETA shows as soon as one trial has validated.
    Trials without a step count (foreign studies) take the mean finished trial time.
    """
    now = now or datetime.now()
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                 if t.state == TrialState.COMPLETE and t.datetime_start and t.datetime_complete]
    live = [(t, trial_eta_s(t, now)) for t in trials if t.state == TrialState.RUNNING]
    known = [(t, eta) for t, eta in live if eta is not None]
    rates = _seconds_per_step(trials)
    if not durations:
        durations = [(_seconds(t, now) or 0.0) + eta for t, eta in known]
        steps = sum(_total_steps(t) or 0 for t, _ in known)
        if known and steps:
            rates = {None: sum(durations) / steps}
    if not durations:
        return None if waiting or running else 0.0
    mean = statistics.fmean(durations)

    def expected(trial: FrozenTrial) -> float:
        steps, rate = _total_steps(trial), rates.get(trial.user_attrs.get("group"), rates.get(None))
        return steps * rate if steps and rate else mean

    left = sum(eta for _, eta in known) + 0.5 * mean * max(0, running - len(known))
    serving = max(1, running, active_workers(trials, now) if workers is None else workers)
    return max((left + sum(expected(t) for t in waiting)) / serving, max((eta for _, eta in known), default=0.0))


def sweep_status(queue: SweepQueue) -> SweepStatus:
    """Read-only: stale trials are shown as such (from their heartbeats), not reaped."""
    now = datetime.now()
    trials = queue.trials()
    stale = queue.stale_trial_ids()
    counts = {state: 0 for state in POINT_STATES}
    for point in queue.point_states():
        counts[point.state] += 1
    running = sum(t.state == TrialState.RUNNING for t in trials)
    live = [t for t in trials if t._trial_id not in stale]
    # Stale trials go back to the queue at the next claim: count them as waiting.
    waiting = [t for t in trials if t.state == TrialState.WAITING or t._trial_id in stale]
    settings = queue.settings()
    metric = queue.study.metric_names[0] if queue.study.metric_names else settings.get("metric")
    rules = settings.get("verdict") or {}
    return SweepStatus(counts=counts, rows=[_row(t, now, t._trial_id in stale) for t in trials], stale=len(stale),
                       eta_s=eta_seconds(live, waiting, running - len(stale), now), metric=metric,
                       may_grow=bool(rules.get("seeds") or rules.get("tune")))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def format_status(name: str, status: SweepStatus, *, show_rows: bool = True) -> str:
    counts = ", ".join(f"{status.counts[s]} {s}" + (f" ({status.stale} stale: worker gone, re-queued at the next claim)"
                                                     if s == "running" and status.stale else "")
                       for s in POINT_STATES)
    eta = "done" if status.finished else ("unknown" if status.eta_s is None else _duration(status.eta_s))
    if status.may_grow and not status.finished:
        eta += " for the points queued now (tuning or seeds may add more)"
    lines = [f"sweep {name}: {sum(status.counts.values())} points: {counts}; ETA {eta}"]
    if show_rows and status.rows:
        header = status.metric or "value"
        rows = [{**{k: v for k, v in r.items() if k != "value"}, header: r["value"]} for r in status.rows]
        lines += ["", format_table(rows, tuple(header if c == "value" else c for c in TRIAL_COLUMNS))]
    return "\n".join(lines)


__all__ = ["SweepStatus", "active_workers", "eta_seconds", "format_status", "sweep_status"]
