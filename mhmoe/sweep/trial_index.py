"""A light read of a study's queue state: per trial its state and the few user attrs a claim decides on.

Every trial carries its whole resolved config as a user attr, so reading all trials through Optuna
(``study.get_trials``) on every claim moved the whole study over the wire while holding the queue
lock; at 100+ workers the claims queued behind each other for seconds. This reads only the columns a
claim needs from Optuna's own tables (``trials``, ``trial_user_attributes``), in one query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

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


__all__ = ["TrialKey", "trial_index", "trial_state"]
