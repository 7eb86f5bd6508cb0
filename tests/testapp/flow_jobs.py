"""Jobs the workflow tests chain and group; each records its calls in Redis, where
every process sees them, so a test can count how often a callback ran."""

import json
import time
from collections.abc import Sequence

from django.conf import settings

from django_jobs import Discard, job
from tests.testapp.jobs import test_redis


def calls_key(name: str) -> str:
    return f"{settings.JOBS['PREFIX']}:test:calls:{name}"


def calls(name: str) -> list:
    """The arguments of every run of a flow job, in the order they ran."""
    return [json.loads(raw) for raw in test_redis().lrange(calls_key(name), 0, -1)]


def _called(name: str, *args: object) -> None:
    test_redis().rpush(calls_key(name), json.dumps(list(args)))


@job(name="flows.add")
def add(x: int, y: int) -> int:
    _called("add", x, y)
    return x + y


@job(name="flows.collect", takes_context=True)
def collect(context, results: list, tag: str = "") -> int:
    """Records its results and tag under "collect", and each run's job id and attempt
    under "collect_runs" (a callback enqueued twice would show two ids)."""
    _called("collect_runs", context.job_id, context.attempt)
    if len(results) > 1000:  # a big group: its size and a sample, not every result
        results = [len(results), results[:3], results[-3:]]
    _called("collect", results, tag)
    return len(results)


@job(name="flows.signal", attempts=5, backoff="fixed", retry_delay=0)
def signal(value: int) -> int:
    """Says it ran (a test kills its worker right then, around the ack) and returns."""
    _called("signal", value)
    time.sleep(0.01)
    return value


@job(name="flows.summary")
def summary(outcomes: dict) -> None:
    _called("summary", outcomes)


@job(name="flows.fail_unless", attempts=1)
def fail_unless(ok_key: str, value: int) -> int:
    """Fails (and, with one attempt, dies) until ``ok_key`` is set in Redis."""
    _called("fail_unless", ok_key, value)
    if not test_redis().exists(calls_key(ok_key)):
        raise RuntimeError("not yet")
    return value


@job(name="flows.discard")
def discard(value: int) -> None:
    raise Discard(f"no {value}")


@job(name="flows.other_add", queue="other")
def other_add(x: int, y: int) -> int:
    _called("other_add", x, y)
    return x + y


@job(name="flows.tally", takes_context=True, attempts=2, backoff="fixed", retry_delay=0)
def tally(context, results) -> int:
    """Records the type, length, sum and ends of its results, then fails its first
    attempt: the retry must read the same results again."""
    _called("tally", type(results).__name__, len(results), sum(results), results[:2], results[-1])
    if context.attempt == 1:
        raise RuntimeError("first attempt fails")
    return len(results)


@job(name="flows.echo")
def echo(value: object) -> object:
    """Records its argument as it got it, and returns it."""
    _called("echo", value)
    return value


@job(name="flows.padded")
def padded(value: int, size: int) -> list:
    """``[value, size bytes]``: a result too big for a group to pass inline."""
    return [value, "x" * size]


def _head(item: object) -> object:
    """A padded result's value; a nested group's results' values."""
    if isinstance(item, Sequence) and not isinstance(item, str):
        return item[0] if isinstance(item[0], int) else [_head(each) for each in item]
    return item


@job(name="flows.heads", takes_context=True, attempts=2, backoff="fixed", retry_delay=0)
def heads(context, results, tag: str = "") -> int:
    """Records the type and length of the padded results it got, their values read
    by iteration and by a slice, then fails its first attempt: the retry must read
    the same results again."""
    values = [_head(item) for item in results]
    ends = [_head(item) for item in results[1:3]]
    _called("heads", type(results).__name__, len(results), values, ends, tag)
    if context.attempt == 1:
        raise RuntimeError("first attempt fails")
    return len(results)


@job(name="flows.heads_unless", attempts=1)
def heads_unless(results, ok_key: str) -> int:
    """Records the padded results' values, then fails (and, with one attempt, dies)
    until ``ok_key`` is set in Redis."""
    _called("heads_unless", type(results).__name__, [_head(item) for item in results])
    if not test_redis().exists(calls_key(ok_key)):
        raise RuntimeError("not yet")
    return len(results)


@job(name="flows.sum_heads", idempotent=True)
def sum_heads(results) -> int:
    """An idempotent callback: the sum of the padded results' values."""
    total = sum(_head(item) for item in results)
    _called("sum_heads", total)
    return total
