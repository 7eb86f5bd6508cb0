"""Fuzz every Lua transition's ARGV, and garbage in each key of a queue: Redis always
answers (a reply, or a script error that says something), no script runs away, and
afterwards the queue still serves: a worker burst never crashes, and new jobs run
once each."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
import redis
from django.conf import settings as django_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_jobs.broker import scripts as lua
from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import QueueKeys, quarantined, worker_key, workers_key
from django_jobs.models import DeadLetter
from tests.faults.garbage import burst_fuzz, examples, garbage
from tests.helpers import burst_ends
from tests.queue_keys import KEY_KINDS
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# The KEYS of each script as the broker passes them (broker/api.py, writing.py, reading.py),
# for a job id ``j``. release gets a job's hold key, not the queue's: a garbage hold
# there would hold the queue the new jobs below are checked on.
KeysOf = Callable[[QueueKeys, str], list[str]]
SCRIPT_KEYS: dict[str, KeysOf] = {
    "enqueue": lambda k, j: [k.waiting, k.prioritized, k.scheduled, k.marker, k.seq, k.stats],
    "enqueue_one": lambda k, j: [k.waiting, k.marker, k.stats, k.prioritized, k.scheduled, k.seq],
    "fetch": lambda k, j: [
        *(k.waiting, k.prioritized, k.scheduled, k.retrying, k.active),
        *(k.marker, k.seq, k.paused, k.held, k.lanes),
    ],
    "start": lambda k, j: [k.job(j), k.active],
    "ack": lambda k, j: [k.active, k.stats, k.marker],
    "retry": lambda k, j: [k.job(j), k.active, k.retrying, k.marker, k.stats],
    "bury": lambda k, j: [k.job(j), k.active, k.dead, k.stats, k.marker],
    "discard": lambda k, j: [k.job(j), k.active, k.stats, k.marker],
    "release": lambda k, j: [
        *(k.job(j), k.active, k.waiting, k.prioritized, k.seq, k.marker),
        *(k.job_held("fuzz.nobody"), k.retrying),
    ],
    "forget_dead": lambda k, j: [k.job(j), k.dead],
    "cancel": lambda k, j: [k.job(j), k.waiting, k.prioritized, k.scheduled, k.retrying, k.stats],
    "cancel_running": lambda k, j: [k.job(j), k.active, k.stats, k.marker],
    "renew": lambda k, j: [k.active, k.pulse],
    "recover": lambda k, j: [
        *(k.active, k.waiting, k.prioritized, k.dead, k.seq, k.marker, k.stats, k.pulse)
    ],
    "progress": lambda k, j: [k.job(j)],
    "step": lambda k, j: [k.job(j)],
    "flow_resolve": lambda k, j: [k.flow("fuzz-flow")],
    "flow_cancel": lambda k, j: [k.flow("fuzz-flow")],
    "flow_built": lambda k, j: [k.flow("fuzz-flow")],
    "enqueue_tick": lambda k, j: [
        k.tick_claim("fuzz", 1),
        *(k.waiting, k.prioritized, k.scheduled, k.marker, k.seq, k.stats),
        k.schedule_runs("fuzz"),
    ],
    "upgrade_waiting": lambda k, j: [k.waiting, k.prioritized],
    "heartbeat": lambda k, j: [worker_key(k.prefix, "fuzz"), workers_key(k.prefix)],
    "purge": lambda k, j: [k.waiting, k.prioritized, k.scheduled, k.stats, k.lanes],
    # On a key nothing else uses: garbage ARGV would move the real keys aside.
    "quarantine": lambda k, j: [f"{k.tag}:fuzz", quarantined(f"{k.tag}:fuzz")],
    "run_now": lambda k, j: [
        *(k.job(j), k.waiting, k.prioritized, k.scheduled, k.retrying, k.seq, k.marker)
    ],
}
# A script may not run longer than this (a loop over a garbage count would).
SCRIPT_SECONDS = 10


def test_every_script_is_fuzzed():
    assert set(SCRIPT_KEYS) == set(lua.NAMES)


def small(raw: bytes) -> bytes:
    return raw[:2000]


def argv(job_prefix: str, job_ids: list[str]) -> st.SearchStrategy[list[bytes]]:
    """Garbage ARGV: all garbage, or garbage after the real job prefix (most scripts'
    first argument), with real job ids and plausible numbers mixed in."""
    plausible = st.one_of(
        garbage().map(small),
        st.sampled_from(job_ids).map(str.encode),
        st.integers(-(2**64), 2**64).map(lambda n: str(n).encode()),
        st.sampled_from([b"0", b"1", b"2", b"1000", b"-1", b"inf", b"nan", b"1e308"]),
    )
    tail = st.lists(plausible, max_size=14)
    return st.one_of(
        tail,
        tail.map(lambda rest: [job_prefix.encode(), *rest]),
    )


def new_jobs_run_once() -> None:
    run = uuid.uuid4().hex[:8]
    fresh = jobs.record.enqueue_many([(f"fresh-{run}-{i}",) for i in range(5)])
    burst_ends()
    for handle in fresh:
        assert (handle.refresh().status, handle.attempts) == ("succeeded", 1)
        assert Effect.objects.filter(key=handle.arguments()[0][0]).count() == 1


# FUZZ_SCRIPTS="step flow_resolve": only these (chaos/fuzz.py --scripts).
FUZZED = os.environ.get("FUZZ_SCRIPTS", "").split() or sorted(SCRIPT_KEYS)


def test_every_script_answers_garbage_argv_and_the_queue_still_serves(private_redis):
    broker = get_broker()
    k = broker.keys("default")
    targets = [h.id for h in jobs.record.enqueue_many([(f"target-{i}",) for i in range(8)])]
    client = redis.Redis.from_url(django_settings.JOBS["REDIS_URL"], socket_timeout=SCRIPT_SECONDS)
    scripts = lua.Scripts(client)
    answered: Counter = Counter()

    @settings(
        max_examples=examples(2000),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.sampled_from(FUZZED), st.sampled_from(targets), argv(k.job_prefix, targets))
    def call(name: str, job_id: str, args: list[bytes]) -> None:
        try:
            getattr(scripts, name)(keys=SCRIPT_KEYS[name](k, job_id), args=args)
        except redis.ResponseError as error:
            assert str(error).strip()
            answered[f"{name}: error"] += 1
        else:
            answered[f"{name}: reply"] += 1

    call()
    assert client.ping()
    assert {key.split(":")[0] for key in answered} == set(FUZZED), answered
    new_jobs_run_once()
    bad = DeadLetter.objects.exclude(error_class="")
    assert not DeadLetter.objects.filter(error_message="").exists(), list(bad[:3])


def write_garbage(client: redis.Redis, key: str, kind: str, values: list[bytes], scores) -> None:
    client.delete(key)
    if kind == "list":
        client.rpush(key, *values)
    elif kind == "zset":
        client.zadd(key, dict(zip(values, scores, strict=False)) or {b"": 0})
    elif kind == "hash":
        client.hset(key, mapping={value[:100] or b"-": value for value in values})
    elif kind == "set":
        client.sadd(key, *values)
    else:
        client.set(key, values[0])


@pytest.mark.redis_only
@burst_fuzz(60)
@given(
    st.sampled_from(sorted(KEY_KINDS)),
    st.lists(garbage().map(small), min_size=1, max_size=8),
    st.lists(st.floats(allow_nan=False), min_size=8, max_size=8),
)
def test_garbage_in_any_key_of_a_queue_costs_no_worker_and_no_new_job(
    private_redis, key_name, values, scores
):
    """Garbage of the key's own type: the worker goes on, and new jobs, limited ones
    included, run once each. (A key of another type is moved aside by the first
    fetch that meets it: tests/test_wrong_type_keys.py.)"""
    client = redis.Redis.from_url(django_settings.JOBS["REDIS_URL"])
    client.flushdb()
    build, kind = KEY_KINDS[key_name]
    key = build(get_broker().keys("default"))
    write_garbage(client, key, kind, values, scores)
    limited = jobs.runs_two_at_a_time.enqueue(f"limited-{uuid.uuid4().hex[:8]}", 0)
    rated = jobs.twenty_a_second.enqueue("rated")
    new_jobs_run_once()
    for handle in (limited, rated):
        assert (handle.refresh().status, handle.attempts) == ("succeeded", 1), key_name
    client.close()
