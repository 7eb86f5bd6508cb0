"""The bound on a lease's age that lets a worker start a job without asking Redis."""

from __future__ import annotations

from django_jobs.broker.clock import RedisClockBound, lease_clock


def test_a_lease_is_dated_by_the_tightest_reply_seen():
    bound = RedisClockBound()
    sent = lease_clock()
    assert bound.local_time_of(5_000_000, fallback=sent) == sent  # nothing seen yet
    bound.observe(sent, 1_000_000)  # Redis read 1000 s when this ran
    bound.observe(sent, 1_000_400)  # a slower reply proves less
    stamped = bound.local_time_of(1_000_250, fallback=0.0)
    assert abs(stamped - (sent + 0.25)) < 0.001


def test_a_lease_never_looks_younger_than_the_request_that_took_it():
    bound = RedisClockBound()
    sent = lease_clock()
    bound.observe(sent, 1_000_000)
    assert bound.local_time_of(999_000, fallback=sent + 5) == sent + 5
