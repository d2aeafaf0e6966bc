"""The sweep queue: one Optuna study whose WAITING trials are grid points still to train.

Submitting enqueues one trial per grid point missing from the study (identity = config hash), so
resubmitting is a no-op and adding a seed adds only the new points. Workers claim a WAITING trial
(see "Claims" below), beat a heartbeat while training, and tell the metric back. A trial whose worker
died stops beating; the next claim fails it (Optuna's heartbeat staleness) and enqueues a new attempt
of the same point carrying the MLflow run id, so the point resumes from its checkpoint. Failed attempts
are retried until ``max_attempt``. An attempt belongs to the worker that claimed it only while its trial
is RUNNING: once reaped, every write of the old worker (tell, fail, checkpoint) is refused.
Optuna's GridSampler is not used: with 2+ workers it re-runs points, and it counts FAILED points
as done. The study also carries each point's checkpoint folder (:mod:`mhmoe.sweep.checkpoints`) and
the sweep's MLflow parent run (:mod:`mhmoe.sweep.parent_run`); those modules own them.

Claims. Every write that creates a trial (submit, re-queue) or ends one (tell, fail, reap, the duplicate
discard) runs under :func:`~mhmoe.sweep.storage.queue_lock`. On SQLite (no row locks) a claim takes it too. On
PostgreSQL a claim reads the index without it and swaps WAITING -> RUNNING in one transaction that row-locks
the first candidate still WAITING and not being swapped by another claim
(:func:`~mhmoe.sweep.trial_index.take_first_waiting`, ``FOR UPDATE SKIP LOCKED``): no trial is claimed twice.
Without the lock a claim takes only a trial that is the one attempt of its point in its snapshot of the index
(WAITING, RUNNING and COMPLETE trials); else it takes the locked path, which discards duplicates as before. No
point runs twice: its other attempts were FAIL in the snapshot and stay so; a new attempt needs a RUNNING one
to fail (re-queue) or a failed point (resubmit); a duplicate left by a lost enqueue commit counts in every
later snapshot, and the locked path discards it once an attempt of its point is taken (a swap refused under
the lock means a lock-free claim took that point). Nor is a trial both discarded and claimed: the two
snapshots would have to disagree on an attempt going RUNNING -> FAIL, which waits for the lock the discarding
claim holds. Nothing is lost: a claim only moves a WAITING trial to RUNNING, and the reaper sees it if the
worker dies (a first heartbeat, in the same transaction on PostgreSQL; a trial that never beat is judged by
its start).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from mhmoe.sweep.outage import MAX_DELAY_S
from mhmoe.sweep.spec import Direction
from mhmoe.sweep.storage import open_storage, queue_lock, try_queue_lock
from mhmoe.sweep.trial_index import (
    TrialKey,
    stale_trial_ids,
    take_first_waiting,
    trial_index,
    trial_state,
    write_params,
)
from mhmoe.tracking.applicable import applicable_params
from mhmoe.training.failures import Fence, LostClaim

# Trial user attrs carried from one attempt of a point to the next.
POINT_ATTRS = ("point", "group", "config_hash", "variant", "seed", "metric", "coords", "overrides", "config",
               "max_attempt", "mlflow_run_id", "kind", "tune_study", "tune_trial", "tuned")
SETTINGS_ATTR = "mhmoe.sweep"
"""Study user attr holding the sweep settings (metric, retries, tracking ...), so workers on other
nodes need only the storage URL and the study name."""
STALE_REASON = "stale: no heartbeat within the grace period (worker died?)"
DUPLICATE_REASON = "duplicate attempt of a point already running or done; discarded"
PARAM_KEYS = ("moe.heads", "moe.num_experts", "moe.top_k", "moe.expert_d_ff", "quant.weight_bits")
"""Numeric config values set as Optuna params when a trial starts (dashboard axes). Not the seed:
it is a user attr, so parameter importance ranks only what the sweep compares."""
NOT_PARAMS = ("seed",)
VARIANT_PARAM = "variant"
"""Categorical Optuna param over the sweep's variants (the ``variants`` setting of the last submit)."""
RETRY_NOT_BEFORE = "retry_not_before"
"""Attr of a failed attempt: its retry waits until this Unix time (a full disk is still full a second later)."""
NOT_BEFORE = "not_before"
"""Attr of a queued retry: :meth:`SweepQueue.claim` leaves it until this Unix time."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, kw_only=True)
class SubmitResult:
    """What a submit changed."""

    added: tuple[str, ...]
    """Labels of the points enqueued now."""
    existing: int
    """Points already in the study (any state)."""
    requeued: tuple[str, ...] = ()
    """Exhausted points given a new attempt (``retry_failed``)."""


@dataclass(frozen=True, kw_only=True)
class PointState:
    """Where one grid point stands, from all its attempts."""

    config_hash: str
    label: str
    state: str
    """done, running, waiting or failed (every attempt failed, none pending)."""
    attempts: tuple[FrozenTrial, ...] = field(default_factory=tuple)


class SweepQueue:
    """An Optuna study used as a crash-safe work queue of grid points."""

    def __init__(self, url: str, study_name: str, *, heartbeat_interval: int | None = None,
                 grace_period: int | None = None, create: bool = False,
                 direction: Direction = "minimize"):
        self.url = url
        self.study_name = study_name
        self.storage = open_storage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
        if create:
            with self.lock():  # two submits of one spec on a fresh store must not both create it
                self.study = optuna.create_study(study_name=study_name, storage=self.storage, direction=direction,
                                                 load_if_exists=True)
        else:
            self.study = optuna.load_study(study_name=study_name, storage=self.storage)

    @classmethod
    def with_heartbeats(cls, url: str, study_name: str, *, heartbeat_interval: int | None = None,
                        grace_period: int | None = None) -> SweepQueue:
        """The study opened with the sweep's heartbeat settings (stored at submit) unless overridden."""
        probe = cls(url, study_name)
        settings = probe.settings()
        probe.close()  # its pooled connection would otherwise count against the server's client limit
        return cls(url, study_name, heartbeat_interval=heartbeat_interval or settings.get("heartbeat_interval"),
                   grace_period=grace_period or settings.get("grace_period"))

    # ------------------------------------------------------------------ study-level
    @staticmethod
    def exists(url: str, study_name: str) -> bool:
        storage = open_storage(url)
        try:
            return any(s.study_name == study_name for s in storage.get_all_studies())
        finally:
            storage.engine.dispose()

    def close(self) -> None:
        """Drop pooled connections (before forking workers: a child must not reuse the parent's)."""
        self.storage.remove_session()
        self.storage.engine.dispose()

    def lock(self):
        return queue_lock(self.storage, self.url, self.study_name)

    def settings(self) -> dict[str, Any]:
        return dict(self.study.user_attrs.get(SETTINGS_ATTR, {}))

    def set_settings(self, settings: dict[str, Any]) -> None:
        self.study.set_user_attr(SETTINGS_ATTR, settings)

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    # ------------------------------------------------------------------ submit
    def submit(self, points: list, *, retries: int, retry_failed: bool = False) -> SubmitResult:
        """Enqueue the points not in the study yet (and, with ``retry_failed``, exhausted ones)."""
        with self.lock():
            return self.submit_unlocked(points, retries=retries, retry_failed=retry_failed)

    def submit_unlocked(self, points: list, *, retries: int, retry_failed: bool = False) -> SubmitResult:
        """:meth:`submit` for a caller that already holds :meth:`lock` (the scheduler's pass)."""
        by_hash = {p.config_hash: p for p in self.point_states()}
        added, requeued = [], []
        for point in points:
            known = by_hash.get(point.config_hash)
            if known is None:
                attrs = {**point.user_attrs(), "attempt": 1, "max_attempt": 1 + retries}
                self.study.enqueue_trial({}, user_attrs=attrs)
                by_hash[point.config_hash] = PointState(config_hash=point.config_hash, label=point.label,
                                                        state="waiting")
                added.append(point.label)
            elif retry_failed and known.state == "failed":
                last = known.attempts[-1]
                attempt = int(last.user_attrs.get("attempt", 1)) + 1
                self._enqueue_attempt(last, attempt=attempt, max_attempt=attempt + retries)
                requeued.append(point.label)
        return SubmitResult(added=tuple(added), existing=len(by_hash) - len(added), requeued=tuple(requeued))

    def _enqueue_attempt(self, previous: FrozenTrial, *, attempt: int, max_attempt: int,
                         reason: str | None = None) -> None:
        # Re-read: the worker may have stored the MLflow run id after `previous` was fetched.
        latest = self.storage.get_trial(previous._trial_id).user_attrs
        attrs = {k: latest[k] for k in POINT_ATTRS if k in latest}
        attrs.update(attempt=attempt, max_attempt=max_attempt, previous_trial=previous.number)
        previous_error = reason or latest.get("failure_reason") or latest.get("error")
        if previous_error:
            attrs["previous_error"] = previous_error[-500:]
        if RETRY_NOT_BEFORE in latest:
            attrs[NOT_BEFORE] = latest[RETRY_NOT_BEFORE]
        self.study.enqueue_trial({}, user_attrs=attrs)

    def _requeue_unlocked(self, trial: FrozenTrial, *, count_attempt: bool = True, reason: str | None = None) -> bool:
        """Enqueue the next attempt of ``trial``'s point if it has attempts left (caller holds the lock).

        ``count_attempt=False`` (a worker stopped by a signal, e.g. SLURM preemption) does not use up
        a retry.
        """
        attempt = int(trial.user_attrs.get("attempt", 1))
        max_attempt = int(trial.user_attrs.get("max_attempt", 1)) + (0 if count_attempt else 1)
        if attempt >= max_attempt:
            return False
        self._enqueue_attempt(trial, attempt=attempt + 1, max_attempt=max_attempt, reason=reason)
        return True

    # ------------------------------------------------------------------ workers
    def stale_trial_ids(self) -> set[int]:
        """RUNNING trials whose heartbeat is older than the grace period (their worker died)."""
        if self.storage.heartbeat_interval is None:
            return set()
        # Nobody could beat during a storage outage: judge heartbeats only once live workers have had a
        # grace period to beat again (plus the longest backoff sleep in which one may not have noticed the
        # database is back), or a restart of the database would reap every running trial.
        grace = self.storage.grace_period or 2 * self.storage.heartbeat_interval
        reachable_for_s = getattr(self.storage, "reachable_for_s", None)
        if reachable_for_s is not None and reachable_for_s() < grace + MAX_DELAY_S:
            return set()
        return stale_trial_ids(self.storage, self.study._study_id, grace)

    def reap(self) -> list[tuple[FrozenTrial, bool]]:
        """Fail RUNNING trials whose heartbeat went stale and re-queue their points.

        Returns each reaped attempt with whether a retry was enqueued, so the caller can close
        its MLflow run. The reason is stored on the attempt itself before it is failed.
        """
        reaped: list[tuple[FrozenTrial, bool]] = []
        if not self.stale_trial_ids():
            return reaped  # the usual case: no need to queue for the lock (re-checked under it)
        with try_queue_lock(self.storage, self.url, self.study_name) as held:
            if not held:
                return reaped  # another worker holds the lock, likely reaping these; a later claim re-checks
            for trial_id in self.stale_trial_ids():
                try:
                    self.storage.set_trial_user_attr(trial_id, "failure_reason", STALE_REASON)
                    if not self.storage.set_trial_state_values(trial_id, TrialState.FAIL):
                        continue
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue  # finished meanwhile (its worker was slow, not dead)
                trial = self.storage.get_trial(trial_id)
                reaped.append((trial, self._requeue_unlocked(trial, reason=STALE_REASON)))
        return reaped

    def claim(self, worker: str | None = None, accepts: Callable[[FrozenTrial], bool] | None = None, *,
              reap: bool = True) -> FrozenTrial | None:
        """Atomically move a WAITING trial to RUNNING and return it (None when none waits).

        Re-queued attempts go first (they usually resume a checkpoint), then submission order.
        ``accepts`` filters what this worker can run (others stay WAITING for another worker);
        ``reap=False`` when the caller reaped just before (to close the reaped trials' runs).
        """
        if reap:
            self.reap()
        attrs = {"worker": worker or worker_id()}  # labels the trial for `sweep status` and the dashboard
        trial_id, in_doubt = self._claim_without_lock(accepts, attrs) if self._row_locked_claims else (None, True)
        if in_doubt:
            trial_id = self._claim_locked(accepts)
            if trial_id is not None:
                # Outside the lock (on SQLite every other claim waits on it): the trial is ours now.
                for key, value in attrs.items():
                    self.storage.set_trial_user_attr(trial_id, key, value)
        if trial_id is None:
            return None
        trial = self.storage.get_trial(trial_id)
        self._set_params(trial)
        return trial  # as read before its params: the worker reads attrs only (one full read fewer per claim)

    @property
    def _row_locked_claims(self) -> bool:
        # PostgreSQL: a row lock taken with SKIP LOCKED keeps a swap single, so claims need not queue on the
        # study's lock (see the module docstring). SQLite has no row locks; MySQL keeps its claims as they were.
        return self.url.startswith("postgresql")

    @staticmethod
    def _claim_order(index: list[TrialKey]) -> list[TrialKey]:
        """WAITING trials in the order claims take them: re-queued attempts first, then submission order."""
        return sorted((k for k in index if k.state == TrialState.WAITING), key=lambda k: (k.attempt == 1, k.number))

    def _claim_without_lock(self, accepts: Callable[[FrozenTrial], bool] | None,
                            attrs: dict[str, Any]) -> tuple[int | None, bool]:
        """The first trial that fits, swapped without the lock: (its id, False); (None, False) when none fits;
        (None, True) when a point with another WAITING, RUNNING or COMPLETE attempt comes first (the locked
        path decides)."""
        index = trial_index(self.storage, self.study._study_id)
        attempts = Counter(k.config_hash for k in index)
        candidates: list[int] = []
        for key in self._claim_order(index):
            if attempts[key.config_hash] > 1:  # the index holds only WAITING, RUNNING and COMPLETE trials
                taken = self._take(candidates, attrs, accepts)
                return taken, taken is None
            if key.not_before <= time.time():  # else a retry waiting out its pause
                candidates.append(key.trial_id)
        return self._take(candidates, attrs, accepts), False

    def _take(self, trial_ids: list[int], attrs: dict[str, Any],
              accepts: Callable[[FrozenTrial], bool] | None) -> int | None:
        """The first of ``trial_ids`` still WAITING that ``accepts`` takes, swapped to RUNNING with its first
        heartbeat and ``attrs`` (skipping trials other claims are swapping right now, unread)."""
        def judge(trial_id: int, number: int, user_attrs: dict[str, Any]) -> bool:
            assert accepts is not None
            return accepts(FrozenTrial(number=number, state=TrialState.WAITING, value=None, datetime_start=None,
                                       datetime_complete=None, params={}, distributions={}, user_attrs=user_attrs,
                                       system_attrs={}, intermediate_values={}, trial_id=trial_id))

        return take_first_waiting(self.storage, trial_ids, heartbeat=self.storage.heartbeat_interval is not None,
                                  attrs=attrs, accepts=None if accepts is None else judge)

    def _claim_locked(self, accepts: Callable[[FrozenTrial], bool] | None) -> int | None:
        """Under the lock, the WAITING -> RUNNING swap of the first trial that fits; its id (None: none fits)."""
        with self.lock():
            index = trial_index(self.storage, self.study._study_id)  # not the configs: one light query
            taken = {k.config_hash for k in index if k.state in (TrialState.RUNNING, TrialState.COMPLETE)}
            for key in self._claim_order(index):
                if key.config_hash in taken:
                    self._discard_duplicate(key.trial_id)
                    continue
                if not self._fits(key, accepts):
                    continue
                if self._swap_to_running(key.trial_id):
                    return key.trial_id
                taken.add(key.config_hash)  # a claim without the lock took it after our read
        return None

    def _fits(self, key: TrialKey, accepts: Callable[[FrozenTrial], bool] | None) -> bool:
        if key.not_before > time.time():
            return False  # a retry waiting out its pause
        return accepts is None or accepts(self.storage.get_trial(key.trial_id))

    def _swap_to_running(self, trial_id: int) -> bool:
        """Optuna's row-locked WAITING -> RUNNING swap; False when another worker took the trial first."""
        try:
            if not self.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                return False
        except optuna.exceptions.UpdateFinishedTrialError:
            return False  # discarded as a duplicate meanwhile
        if self.storage.heartbeat_interval is not None:
            # Optuna only judges trials that have beaten at least once.
            self.storage.record_heartbeat(trial_id)
        return True

    def _discard_duplicate(self, trial_id: int) -> None:
        """Fail a WAITING attempt of a point that is already running or done (caller holds the lock).

        Only a commit lost mid-enqueue during a storage outage creates one (:mod:`mhmoe.sweep.outage`);
        training it would run the point twice.
        """
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.storage.set_trial_user_attr(trial_id, "failure_reason", DUPLICATE_REASON)
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)

    def _set_params(self, trial: FrozenTrial) -> None:
        """Numeric config values as Optuna params, so the dashboard can slice the study."""
        flat: dict[str, Any] = {}
        config = trial.user_attrs.get("config", {})
        for key in PARAM_KEYS:
            node: Any = config
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            flat[key] = node
        flat = applicable_params(flat, config.get("model", {}).get("ffn", ""))
        for key, value in trial.user_attrs.get("coords", {}).items():
            if key not in NOT_PARAMS:
                flat.setdefault(key, value)
        params: dict[str, tuple[float, Any]] = {}
        for key, value in flat.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            dist = IntDistribution(value, value) if isinstance(value, int) else FloatDistribution(value, value)
            params[key] = (float(value), dist)
        variant, choices = trial.user_attrs.get("variant"), tuple(self.settings().get("variants") or ())
        if variant in choices:
            params[VARIANT_PARAM] = (choices.index(variant), CategoricalDistribution(choices))
        write_params(self.storage, self.study._study_id, trial._trial_id, params)

    def set_attrs(self, trial: FrozenTrial, attrs: dict[str, Any]) -> None:
        """Raises :class:`LostClaim` when the attempt already ended (reaped as stale and re-queued)."""
        try:
            for key, value in attrs.items():
                self.storage.set_trial_user_attr(trial._trial_id, key, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            raise LostClaim(f"lost claim: trial {trial.number} was re-queued to another worker; "
                            "stopped without writing") from None

    def is_running(self, trial: FrozenTrial) -> bool:
        return trial_state(self.storage, trial._trial_id) == TrialState.RUNNING  # not its attrs: each beat asks

    def fence(self, trial: FrozenTrial) -> Fence:
        """The claim on ``trial`` as the training loop sees it (holds while the trial is RUNNING)."""
        return Fence(lambda: self.is_running(trial), what=f"trial {trial.number}")

    def complete(self, trial: FrozenTrial, value: float, attrs: dict[str, Any]) -> bool:
        """Tell ``value``; False if the trial was already reaped as stale (its retry owns the point)."""
        try:
            self.set_attrs(trial, attrs)  # before the lock: Optuna refuses them once the trial is reaped
        except LostClaim:
            return False
        with self.lock():  # kept short: every claim waits on it
            if not self.is_running(trial):
                return False
            if not math.isfinite(value):
                raise ValueError(f"trial {trial.number}: metric {value!r} is not finite")
            # What study.tell does for a finite value, without re-reading the trial (no sampler runs here)
            return self.storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [value])

    def fail(self, trial: FrozenTrial, reason: str, *, error: str | None = None, retry: bool = True,
             count_attempt: bool = True, attrs: dict[str, Any] | None = None) -> str:
        """Mark the attempt FAIL with its one-line ``reason`` (and full ``error`` text, e.g. a traceback).

        Returns ``retried`` (a new attempt is queued), ``failed`` (no attempt left, or ``retry``
        is off) or ``lost`` (the attempt was no longer this worker's: nothing was written).
        """
        with self.lock():
            if not self.is_running(trial):
                return "lost"
            self.set_attrs(trial, {**(attrs or {}), "failure_reason": reason, "error": (error or reason)[-2000:]})
            self.study.tell(trial.number, state=TrialState.FAIL)
            if retry and self._requeue_unlocked(self.storage.get_trial(trial._trial_id), count_attempt=count_attempt):
                return "retried"
            return "failed"

    def pending(self) -> tuple[int, int]:
        """(waiting, running) trial counts."""
        index = trial_index(self.storage, self.study._study_id)
        return (sum(k.state == TrialState.WAITING for k in index), sum(k.state == TrialState.RUNNING for k in index))

    # ------------------------------------------------------------------ status
    def point_states(self) -> list[PointState]:
        """One entry per grid point (config hash), in first-enqueued order."""
        by_hash: dict[str, list[FrozenTrial]] = {}
        for trial in self.trials():
            key = trial.user_attrs.get("config_hash")
            if key is not None:
                by_hash.setdefault(key, []).append(trial)
        out = []
        for key, attempts in by_hash.items():
            states = {t.state for t in attempts}
            if TrialState.COMPLETE in states:
                state = "done"
            elif TrialState.RUNNING in states:
                state = "running"
            elif TrialState.WAITING in states:
                state = "waiting"
            else:
                state = "failed"
            out.append(PointState(config_hash=key, label=attempts[0].user_attrs.get("point", key),
                                  state=state, attempts=tuple(attempts)))
        return out


class Heartbeat:
    """Background thread that records a trial's heartbeat every ``interval`` seconds.

    With a ``fence``, each beat also re-checks that the trial is still this worker's, so a
    worker whose trial was reaped stops training within one interval.
    """

    def __init__(self, queue: SweepQueue, trial: FrozenTrial, interval: float, fence: Fence | None = None):
        self._queue, self._trial, self._interval, self._fence = queue, trial, interval, fence
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial.number}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._queue.storage.record_heartbeat(self._trial._trial_id)
                if self._fence is not None:
                    self._fence.refresh()
            except Exception:  # a busy database must not kill the trial; the next beat retries
                pass

    def __enter__(self) -> Heartbeat:
        if self._queue.storage.heartbeat_interval is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


__all__ = ["Heartbeat", "PointState", "SubmitResult", "SweepQueue", "worker_id"]
