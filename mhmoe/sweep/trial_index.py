"""A light read of a study's queue state: per trial its state and the few user attrs a claim decides on.

Every trial carries its whole resolved config as a user attr, so reading all trials through Optuna
(``study.get_trials``) on every claim moved the whole study over the wire while holding the queue
lock; at 100+ workers the claims queued behind each other for seconds. This reads only the columns a
claim needs from Optuna's own tables (``trials``, ``trial_user_attributes``), in one query.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from optuna.trial import TrialState

from mhmoe.sweep.outage import call_on

INDEX_ATTRS = ("config_hash", "attempt", "not_before")
"""The user attrs a claim decides on (identity, retry priority, retry pause)."""
QUEUE_STATES = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)

_QUERY = (
    "SELECT t.trial_id, t.number, t.state, a.key, a.value_json FROM trials t "
    "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key IN ({attrs}) "
    "WHERE t.study_id = :study_id AND t.state IN ({states})"
)


@dataclass(frozen=True, kw_only=True)
class TrialKey:
    """One trial as a claim sees it."""

    trial_id: int
    number: int
    state: TrialState
    config_hash: str | None
    attempt: int
    not_before: float


def _query() -> str:
    attrs = ", ".join(f"'{key}'" for key in INDEX_ATTRS)
    states = ", ".join(f"'{state.name}'" for state in QUEUE_STATES)  # Optuna stores the enum's name
    return _QUERY.format(attrs=attrs, states=states)


def trial_index(storage, study_id: int) -> list[TrialKey]:
    """WAITING, RUNNING and COMPLETE trials of the study, in trial-number order (retried like any storage call
    on a server database)."""
    from sqlalchemy import text

    def read() -> list[tuple]:
        with storage.engine.connect() as conn:
            return list(conn.execute(text(_query()), {"study_id": study_id}))

    rows = call_on(storage, read)
    found: dict[int, dict] = {}
    for trial_id, number, state, key, value_json in rows:
        entry = found.setdefault(trial_id, {"number": number, "state": state})
        if key is not None:
            entry[key] = json.loads(value_json)
    return sorted((TrialKey(trial_id=trial_id, number=e["number"], state=TrialState[e["state"]],
                            config_hash=e.get("config_hash"), attempt=int(e.get("attempt", 1)),
                            not_before=float(e.get("not_before", 0) or 0))
                   for trial_id, e in found.items()), key=lambda k: k.number)


def trial_state(storage, trial_id: int) -> TrialState:
    """One trial's state, without its params and attrs (a fence check on every heartbeat)."""
    from sqlalchemy import text

    def read() -> str:
        with storage.engine.connect() as conn:
            return conn.execute(text("SELECT state FROM trials WHERE trial_id = :trial_id"),
                                {"trial_id": trial_id}).scalar_one()

    return TrialState[call_on(storage, read)]


_STALE = (
    "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
    "WHERE t.study_id = :study_id AND t.state = 'RUNNING' AND ((h.heartbeat IS NOT NULL AND h.heartbeat < :beat_cutoff)"
    " OR (h.heartbeat IS NULL AND t.datetime_start < :start_cutoff))"
)


def stale_trial_ids(storage, study_id: int, grace_s: float) -> set[int]:
    """RUNNING trials of the study whose last heartbeat is older than ``grace_s``, and those that never beat
    and started longer ago than that (a worker killed between its claim and its first beat; Optuna's own
    reaper skips them, so they would stay RUNNING for ever). One query returning only the stale trials,
    where Optuna's reads every running trial with its heartbeat on each claim.

    Heartbeats are compared on the database's clock (Optuna writes them with the database's ``now()``),
    start times on this machine's UTC clock (Optuna writes them from Python as naive UTC)."""
    from sqlalchemy import DateTime, bindparam, func, select, text

    def read() -> set[int]:
        with storage.engine.connect() as conn:
            now_db = conn.execute(select(func.now())).scalar().replace(tzinfo=None)
            started = datetime.now(timezone.utc).replace(tzinfo=None)
            query = text(_STALE).bindparams(bindparam("beat_cutoff", type_=DateTime),
                                            bindparam("start_cutoff", type_=DateTime))
            rows = conn.execute(query, {"study_id": study_id, "beat_cutoff": now_db - timedelta(seconds=grace_s),
                                        "start_cutoff": started - timedelta(seconds=grace_s)})
            return {int(row[0]) for row in rows}

    return call_on(storage, read)


_FIRST_DISTRIBUTIONS = (
    "SELECT p.param_name, p.distribution_json FROM trial_params p WHERE p.param_id IN ("
    "SELECT MIN(q.param_id) FROM trial_params q JOIN trials t ON t.trial_id = q.trial_id "
    "WHERE t.study_id = :study_id GROUP BY q.param_name)"
)


def write_params(storage, study_id: int, trial_id: int, params: dict[str, tuple[float, Any]]) -> None:
    """Set a fresh trial's params (``name -> (internal value, Optuna distribution)``) in one transaction.

    Optuna's ``set_trial_param`` costs a transaction and a study-wide lookup per param, the largest part of
    a claim at 100+ workers. A param whose distribution is incompatible with the one the study first
    recorded under its name (an int that was a float, new categorical choices) is left out, as Optuna would
    refuse it; the trial's user attrs hold every value anyway."""
    from optuna.distributions import check_distribution_compatibility, distribution_to_json, json_to_distribution
    from sqlalchemy import text

    def write() -> None:
        with storage.engine.begin() as conn:
            first = dict(conn.execute(text(_FIRST_DISTRIBUTIONS), {"study_id": study_id}).all())
            rows = []
            for name, (value, distribution) in params.items():
                if name in first:
                    try:
                        check_distribution_compatibility(json_to_distribution(first[name]), distribution)
                    except ValueError:
                        continue
                rows.append({"trial_id": trial_id, "name": name, "value": float(value),
                             "distribution": distribution_to_json(distribution)})
            if rows:
                conn.execute(text("INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) "
                                  "VALUES (:trial_id, :name, :value, :distribution)"), rows)

    call_on(storage, write)


_USER_ATTR = (
    "INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (:trial_id, :key, :value_json) "
    "ON CONFLICT (trial_id, key) DO UPDATE SET value_json = EXCLUDED.value_json"
)
_TAKE_FIRST_WAITING = (
    "SELECT trial_id, number FROM trials WHERE trial_id = ANY(:ids) AND state = 'WAITING' "
    "ORDER BY array_position(:ids, trial_id) LIMIT 1 FOR UPDATE SKIP LOCKED"
)
_HEARTBEAT = (
    "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (:trial_id, now()) "
    "ON CONFLICT (trial_id) DO UPDATE SET heartbeat = EXCLUDED.heartbeat"
)


def _user_attrs(conn, trial_id: int) -> dict[str, Any]:
    from sqlalchemy import text

    rows = conn.execute(text("SELECT key, value_json FROM trial_user_attributes WHERE trial_id = :trial_id"),
                        {"trial_id": trial_id})
    return {key: json.loads(value_json) for key, value_json in rows}


def take_first_waiting(storage, trial_ids: list[int], *, heartbeat: bool, attrs: dict[str, Any],
                       accepts: Callable[[int, int, dict[str, Any]], bool] | None = None) -> int | None:
    """PostgreSQL: move the first of ``trial_ids`` (in that order) that is still WAITING, and that ``accepts``
    (trial id, number, user attrs) takes, to RUNNING, with its first heartbeat and the user ``attrs`` (who
    took it), in one transaction; its id, or None when every one is taken, being taken or refused.

    ``FOR UPDATE SKIP LOCKED`` passes over a trial another claim is swapping right now instead of waiting
    for that claim to commit and then finding the trial RUNNING: at 100+ workers every claim would
    otherwise queue behind the first one on the same row. The swap and the heartbeat commit together, so a
    worker killed right after its claim leaves a trial the reaper sees (Optuna's reaper skips RUNNING
    trials that never beat). Retried like any storage call: a retry after a commit that did land finds
    that trial RUNNING and takes the next one; the first is reaped after the grace period and re-queued.
    ``accepts`` judges only trials this claim holds locked, so a worker never reads the trials other claims
    took first; a refused one stays locked (skipped by others) until this transaction ends. The columns
    written are Optuna's own (``datetime_start`` is naive UTC, as Optuna stores it).
    """
    from sqlalchemy import text

    if not trial_ids:
        return None

    def swap() -> int | None:
        with storage.engine.begin() as conn:
            refused: set[int] = set()
            while True:
                row = conn.execute(text(_TAKE_FIRST_WAITING),
                                   {"ids": [i for i in trial_ids if i not in refused]}).first()
                if row is None:
                    return None
                trial_id, number = row
                if accepts is None or accepts(trial_id, number, _user_attrs(conn, trial_id)):
                    break
                refused.add(trial_id)
            started = datetime.now(timezone.utc).replace(tzinfo=None)
            conn.execute(text("UPDATE trials SET state = 'RUNNING', datetime_start = :started "
                              "WHERE trial_id = :trial_id"), {"started": started, "trial_id": trial_id})
            if heartbeat:
                conn.execute(text(_HEARTBEAT), {"trial_id": trial_id})
            if attrs:
                conn.execute(text(_USER_ATTR), [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                                                for key, value in attrs.items()])
            return int(trial_id)

    return call_on(storage, swap)


__all__ = ["TrialKey", "stale_trial_ids", "take_first_waiting", "trial_index", "trial_state", "write_params"]
