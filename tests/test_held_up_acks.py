"""A success whose ack is held up past its lease is still recorded, once: its job
stays leased to the worker (the lease keeper renews it) until Redis says whether
the ack counts, so no clock of the worker's gives it up and lets it run again."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import redis
from django.test import override_settings

from django_jobs.broker.connection import get_broker
from django_jobs.worker import acks
from django_jobs.worker.event_delivery import EventDelivery
from tests.helpers import blocked_success_receiver, poll, serving
from tests.services import RedisServer
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 1.5


@pytest.fixture
def own_redis(settings):
    """A redis-server of this test's own: it is told to refuse writes for a moment."""
    server = RedisServer().start()
    with override_settings(
        JOBS={**settings.JOBS, "REDIS_URL": server.url, "LEASE_SECONDS": LEASE_SECONDS}
    ):
        yield server
    server.cleanup()


def lease_expiry_ms(job_id: str) -> float:
    broker = get_broker()
    score = broker.client.zscore(broker.keys("default").active, job_id)
    assert score is not None, "the job is no longer leased"
    return score


def test_a_success_held_up_past_its_lease_by_slow_listeners_runs_once(
    own_redis, monkeypatch, caplog
):
    monkeypatch.setattr(acks, "EventDelivery", lambda: EventDelivery(max_queued=1))
    control = redis.Redis(port=own_redis.port)
    first = jobs.record.enqueue("first")
    with (
        caplog.at_level(logging.WARNING, logger="django_jobs.worker"),
        blocked_success_receiver(first.id) as receiver,
        serving(concurrency=2) as worker,
    ):
        poll(receiver.entered.is_set)
        jobs.record.enqueue_many([("filler-1",), ("filler-2",)])
        poll(lambda: "recording more successes waits" in caplog.text)
        held = jobs.record.enqueue("held")
        poll(lambda: len(worker._acker._pending) == 1)  # its ack waits behind the listener
        # More than a lease after it was handed in (by Redis' clock), its lease is still
        # renewed: the keeper renews it every third of a lease from the last renewal
        # before the hand-in, which was at most a third of a lease earlier.
        expiry_at_hand_in = lease_expiry_ms(held.id)
        poll(
            lambda: lease_expiry_ms(held.id) > expiry_at_hand_in + LEASE_SECONDS * 1000 * 1.5,
            timeout=3 * LEASE_SECONDS + 10,
        )
        # Redis refuses writes for a moment (too few replicas), as the acker gets room.
        control.config_set("min-replicas-to-write", 1)
        receiver.release.set()
        poll(lambda: "success(es) yet" in caplog.text or "could not record the" in caplog.text)
        control.config_set("min-replicas-to-write", 0)
        poll(lambda: held.refresh().status == "succeeded", timeout=4 * LEASE_SECONDS + 10)
    assert Effect.objects.filter(key="held").count() == 1  # never run twice
    assert held.attempts == 1
    assert "could not record the success" not in caplog.text


@pytest.fixture
def restartable_redis(settings):
    """A redis-server of this test's own with an append-only file: it is stopped and
    started again, its jobs kept."""
    server = RedisServer(aof=True).start()
    with override_settings(
        JOBS={**settings.JOBS, "REDIS_URL": server.url, "LEASE_SECONDS": LEASE_SECONDS}
    ):
        yield server
    server.cleanup()


def test_a_success_that_finished_while_redis_was_away_longer_than_a_lease_runs_once(
    restartable_redis, caplog
):
    """Nobody could renew a lease while Redis was away, so one that ran out meanwhile
    is held for its worker (includes/pulse.lua): the ack is recorded when Redis is
    back, not given up a lease after the job finished."""
    handle = jobs.says_started_then_records.enqueue("finished-while-away", 1.0)
    with caplog.at_level(logging.WARNING, logger="django_jobs.worker"), serving():
        poll(lambda: handle.refresh().progress)  # started: it finishes while Redis is away
        restartable_redis.stop()
        poll(lambda: Effect.objects.filter(key="finished-while-away").exists())
        poll(lambda: "cannot record 1 success(es) yet" in caplog.text)
        threading.Event().wait(2 * LEASE_SECONDS)  # the outage lasts longer than a lease
        restartable_redis.start()
        poll(lambda: handle.refresh().status == "succeeded", timeout=4 * LEASE_SECONDS + 10)
    assert Effect.objects.filter(key="finished-while-away").count() == 1  # never run twice
    assert handle.attempts == 1
    assert "could not record the success" not in caplog.text


def test_a_stop_while_redis_is_away_gives_up_the_success_it_could_not_record(
    restartable_redis, caplog
):
    """No clock gives an ack up any more, but a stop does not wait for Redis for
    ever: past the grace and the acker's wait, the success is given up (it runs
    again once its lease runs out: at least once) and the acker ends."""
    handle = jobs.says_started_then_records.enqueue("unrecorded", 1.0)
    with caplog.at_level(logging.WARNING, logger="django_jobs.worker"):
        with serving(grace_seconds=0.5) as worker:
            poll(lambda: handle.refresh().progress)
            restartable_redis.stop()
            poll(lambda: "cannot record 1 success(es) yet" in caplog.text)
            stopping_at = time.monotonic()
        assert time.monotonic() - stopping_at < 0.5 + LEASE_SECONDS + 10
        poll(lambda: not worker._acker.is_alive())
    assert f"could not record the success of job {handle.id}" in caplog.text
