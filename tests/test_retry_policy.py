"""Backoff: exponential with bounded jitter and a cap, fixed, or a callable."""

import pytest

from django_jobs.retry_policy import RetryPolicy


@pytest.mark.parametrize(("attempt", "nominal"), [(1, 2.0), (2, 4.0), (3, 8.0), (10, 100.0)])
def test_exponential_backoff_doubles_with_jitter_and_cap(attempt, nominal):
    policy = RetryPolicy(retry_delay=2, retry_max_delay=100)
    delays = [policy.delay_seconds(attempt) for _ in range(200)]
    assert all(nominal / 2 <= d <= nominal for d in delays)
    assert len(set(delays)) > 1  # jittered


def test_fixed_backoff_waits_the_same_every_time():
    policy = RetryPolicy(backoff="fixed", retry_delay=7)
    assert {policy.delay_seconds(n) for n in range(1, 6)} == {7}


def test_callable_backoff_gets_the_attempt_number():
    policy = RetryPolicy(backoff=lambda attempt: attempt * 10)
    assert [policy.delay_seconds(n) for n in (1, 2, 3)] == [10, 20, 30]


def test_retry_on_and_dont_retry_on():
    policy = RetryPolicy(retry_on=(OSError,), dont_retry_on=(FileNotFoundError,))
    assert policy.should_retry(ConnectionError())
    assert not policy.should_retry(FileNotFoundError())
    assert not policy.should_retry(ValueError())
