"""Claims on PostgreSQL without the queue lock: they do not wait for it, and racing threads (claims,
duplicate attempts, re-queues) still run every point exactly once (the argument: mhmoe/sweep/queue.py)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from optuna.trial import TrialState

from mhmoe.sweep.queue import DUPLICATE_REASON, SweepQueue
from tests.pg_server import fresh_database

pytestmark = pytest.mark.postgres
THREADS = 12


def _queue(postgres_server, database: str, hashes: list[str], *, max_attempt: int = 1) -> SweepQueue:
    queue = SweepQueue(fresh_database(postgres_server, database), "q", create=True)
    for key in hashes:
        queue.study.enqueue_trial({}, user_attrs={"config_hash": key, "point": key, "attempt": 1,
                                                  "max_attempt": max_attempt})
    return queue


def _in_threads(url: str, body) -> None:
    """``body(queue, index)`` in THREADS threads at once, each with its own storage (as worker processes have)."""
    queues = [SweepQueue(url, "q", heartbeat_interval=60) for _ in range(THREADS)]
    start, errors = threading.Barrier(THREADS), []

    def run(i: int) -> None:
        try:
            start.wait(timeout=60)
            body(queues[i], i)
        except BaseException as err:  # noqa: BLE001 - re-raised in the test thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for queue in queues:
        queue.close()
    assert not errors, errors


def test_a_claim_on_postgres_does_not_wait_for_the_queue_lock(postgres_server) -> None:
    queue = _queue(postgres_server, "claim_no_wait", ["a", "b"])
    claimer = SweepQueue(queue.url, "q")
    got: list = []
    thread = threading.Thread(target=lambda: got.append(claimer.claim()), daemon=True)
    with queue.lock():  # e.g. a submit or a tell holding it
        thread.start()
        thread.join(timeout=15)
        assert got and got[0] is not None and got[0].user_attrs["config_hash"] == "a", "the claim waited for the lock"
    thread.join(timeout=15)
    claimer.close()


def test_a_duplicate_attempt_sends_the_claim_to_the_locked_path_which_discards_it(postgres_server) -> None:
    queue = _queue(postgres_server, "claim_duplicate", ["a", "a", "b"])  # "a" twice: a commit lost mid-enqueue
    first = queue.claim()
    assert first is not None and first.number == 0
    second = queue.claim()
    assert second is not None and second.user_attrs["config_hash"] == "b"
    duplicate = queue.storage.get_trial(queue.trials()[1]._trial_id)
    assert duplicate.state == TrialState.FAIL and duplicate.user_attrs["failure_reason"] == DUPLICATE_REASON
    assert queue.claim() is None


def test_a_locked_claim_whose_read_went_stale_does_not_take_a_second_attempt_of_the_point(postgres_server) -> None:
    """A claim without the lock that read the index before a duplicate of point "a" was enqueued swaps the
    first attempt while a locked claim (which saw both) is deciding: the locked claim must not take the other."""
    queue = _queue(postgres_server, "claim_stale_read", ["a", "a", "b"])
    other = SweepQueue(queue.url, "q")
    first, duplicate = queue.trials()[:2]

    def accepts(trial) -> bool:  # runs between the locked claim's read and its swap
        if trial.number == first.number:
            assert other.storage.set_trial_state_values(first._trial_id, TrialState.RUNNING)
        return True

    trial = queue.claim(accepts=accepts)
    assert trial is not None and trial.user_attrs["config_hash"] == "b"
    assert queue.storage.get_trial(duplicate._trial_id).state == TrialState.FAIL
    other.close()


def test_racing_claims_run_every_point_once_even_with_duplicate_attempts(postgres_server) -> None:
    hashes = [f"h{i}" for i in range(36)]
    duplicated = hashes[::3]  # every third point enqueued twice, right behind its first attempt
    queue = _queue(postgres_server, "claim_threads",
                   [h for key in hashes for h in ([key, key] if key in duplicated else [key])])
    claimed: list[str] = []

    def claim_all(q: SweepQueue, _: int) -> None:
        while (trial := q.claim()) is not None:
            claimed.append(trial.user_attrs["config_hash"])

    _in_threads(queue.url, claim_all)
    assert sorted(claimed) == sorted(hashes), Counter(claimed).most_common(3)
    states = Counter(t.state for t in queue.trials())
    assert states == {TrialState.RUNNING: len(hashes), TrialState.FAIL: len(duplicated)}


def test_claims_racing_requeues_never_take_a_retry_for_a_duplicate(postgres_server) -> None:
    """Half the attempts fail and are re-queued (under the lock) while other threads claim without it."""
    hashes = [f"h{i}" for i in range(30)]
    queue = _queue(postgres_server, "claim_requeue", hashes, max_attempt=3)

    def work(q: SweepQueue, i: int) -> None:
        rng = random.Random(i)
        while True:
            trial = q.claim()
            if trial is None:
                waiting, running = q.pending()
                if waiting == running == 0:
                    return
                time.sleep(0.05)  # a retry's attempt is being enqueued
                continue
            if trial.user_attrs["attempt"] < 3 and rng.random() < 0.5:
                assert q.fail(trial, "boom") == "retried"
            else:
                assert q.complete(trial, 1.0, {})

    _in_threads(queue.url, work)
    trials = queue.trials()
    complete = Counter(t.user_attrs["config_hash"] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == Counter(hashes)  # each point done exactly once
    assert not [t.number for t in trials if t.user_attrs.get("failure_reason") == DUPLICATE_REASON]
    assert sum(t.state == TrialState.FAIL for t in trials) >= 10, "the re-queues did not happen"


def test_a_reap_on_postgres_leaves_stale_trials_to_the_lock_holder_instead_of_queueing(postgres_server) -> None:
    """After a worker death every claim sees the stale trial: one reaps it, the others do not line up for the
    lock only to find it reaped."""
    queue = _queue(postgres_server, "reap_no_wait", ["a"], max_attempt=2)
    reaper = SweepQueue(queue.url, "q", heartbeat_interval=1, grace_period=1)
    assert reaper.claim() is not None  # then it stops beating: stale after the grace period
    deadline = time.monotonic() + 30
    while not reaper.stale_trial_ids():
        assert time.monotonic() < deadline, "the trial never went stale"
        time.sleep(0.5)
    got: list = []
    thread = threading.Thread(target=lambda: got.append(reaper.reap()), daemon=True)
    with queue.lock():
        thread.start()
        thread.join(timeout=15)
        assert got == [[]], "the reap waited for the lock"
    (trial, retried), = reaper.reap()  # the lock is free again: reaped and re-queued
    assert trial.state == TrialState.FAIL and retried
    reaper.close()


def test_a_claim_skips_a_trial_another_claim_is_swapping_instead_of_waiting_for_it(postgres_server) -> None:
    """Another claim's open swap (its row lock on trial "a") is passed over at once: without SKIP LOCKED every
    claim of a starting fleet queued behind the first one on the same row."""
    from sqlalchemy import text

    queue = _queue(postgres_server, "claim_skip_locked", ["a", "b"])
    first = queue.study.trials[0]._trial_id
    claimer = SweepQueue(queue.url, "q", heartbeat_interval=60)
    with queue.storage.engine.begin() as conn:  # a claim mid-swap of "a", not yet committed
        conn.execute(text("SELECT trial_id FROM trials WHERE trial_id = :t FOR UPDATE"), {"t": first})
        started = time.monotonic()
        trial = claimer.claim()
        waited = time.monotonic() - started
    assert trial is not None and trial.user_attrs["config_hash"] == "b"
    assert waited < 5, f"the claim waited {waited:.1f} s for the other claim's row lock"
    claimer.close()


def test_a_worker_killed_right_after_its_claim_leaves_a_trial_the_reaper_sees(postgres_server) -> None:
    """The swap to RUNNING and the first heartbeat commit together: a claim that never beats again is
    reaped after the grace period and its point re-queued (Optuna's reaper skips trials that never beat)."""
    queue = _queue(postgres_server, "claim_then_die", ["a"], max_attempt=2)
    claimer = SweepQueue(queue.url, "q", heartbeat_interval=1, grace_period=2)
    trial = claimer.claim()
    assert trial is not None
    claimer.close()  # the worker is gone: nothing beats for this trial again
    time.sleep(3.5)
    reaper = SweepQueue(queue.url, "q", heartbeat_interval=1, grace_period=2)
    reaper.storage.reachable_for_s = lambda: 1e9  # no outage was seen: judge heartbeats now
    reaped = reaper.reap()
    assert [t.number for t, _ in reaped] == [trial.number] and reaped[0][1], "the claimed trial was not reaped"
    reaper.close()


def test_a_filtered_claim_leaves_the_trials_it_refuses_waiting_for_another_worker(postgres_server) -> None:
    """``accepts`` judges the trials the claim holds locked, from their user attrs: a refused one stays WAITING."""
    queue = _queue(postgres_server, "claim_filtered", ["big", "small"])
    claimer = SweepQueue(queue.url, "q", heartbeat_interval=60)
    seen: list[str] = []

    def accepts(trial) -> bool:
        seen.append(trial.user_attrs["config_hash"])
        return trial.user_attrs["config_hash"] == "small"

    trial = claimer.claim(accepts=accepts)
    assert trial is not None and trial.user_attrs["config_hash"] == "small" and seen == ["big", "small"]
    states = {t.user_attrs["config_hash"]: t.state for t in queue.study.get_trials(deepcopy=False)}
    assert states == {"big": TrialState.WAITING, "small": TrialState.RUNNING}
    assert claimer.claim(accepts=accepts) is None
    claimer.close()
