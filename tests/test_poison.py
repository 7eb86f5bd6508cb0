"""One bad record costs exactly one job: bytes that are not UTF-8 in a job's hash,
arguments nested past any recursion limit, an exception that cannot be printed.
The bad job goes to the dead letters with an error naming what is wrong; the jobs
beside it (in the same fetch batch, or dead behind it) are not affected."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings

from django_jobs.broker.connection import get_broker
from django_jobs.handle import JobHandle
from django_jobs.models import DeadLetter
from django_jobs.worker.housekeeping import Housekeeper
from tests.helpers import run_burst
from tests.test_worker import _raw_job
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def write_bytes(job_id: str, field: str, value: bytes) -> None:
    """Garbage straight into a job's hash, as another program (or a bug) could."""
    raw = redis.Redis.from_url(settings.JOBS["REDIS_URL"])
    try:
        raw.hset(get_broker().keys("default").job(job_id), field, value)
    finally:
        raw.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("args", b'["\xff\xfe caf\xe9"]'),
        ("name", b"tests.testapp.jobs.rec\xf6rd"),
        ("kwargs", b'{"k": "\xc3"}'),
        ("options", b'{"q": "\xa0"}'),
    ],
)
def test_a_job_hash_that_is_not_utf8_costs_only_that_job(field, value):
    before = jobs.record.enqueue_many([(f"before-{i}",) for i in range(3)])
    bad_id = _raw_job("tests.testapp.jobs.record", '["bad"]', attempts=5)
    write_bytes(bad_id, field, value)
    after = jobs.record.enqueue_many([(f"after-{i}",) for i in range(3)])

    run_burst(concurrency=2, prefetch=8)  # one fetch batch holds them all

    for handle in (*before, *after):
        assert handle.refresh().status == "succeeded"
        assert handle.attempts == 1
    letter = DeadLetter.objects.get(job_id=bad_id)
    assert letter.error_class == "django_jobs.exceptions.MalformedPayload"
    assert f"'{field}'" in letter.error_message and "UTF-8" in letter.error_message
    assert letter.attempts == 1
    assert not Effect.objects.filter(key="bad").exists()
    assert JobHandle(bad_id, "default").refresh().status == "dead"  # readable, not raising
    if field == "args":
        assert get_broker().get_job("default", bad_id)["args"] == '["\ufffd\ufffd caf\ufffd"]'


def test_a_dead_job_that_is_not_utf8_does_not_keep_other_dead_jobs_from_their_rows():
    broker = get_broker()
    bad_id = _raw_job("tests.testapp.jobs.record", '["x"]', attempts=1)
    good_id = _raw_job("tests.testapp.jobs.always_fails", '["y"]', attempts=1)
    for job_id in (bad_id, good_id):
        keys = broker.keys("default")
        broker.client.hset(keys.job(job_id), "state", "dead")
        broker.client.zadd(keys.dead, {job_id: 0})
    write_bytes(bad_id, "args", b'["\xff"]')
    write_bytes(bad_id, "traceback-of-nothing", b"\xfe")
    housekeeper = Housekeeper(broker, interval=1)
    housekeeper.bury("default", bad_id)
    housekeeper.bury("default", good_id)
    housekeeper.tidy()
    assert set(DeadLetter.objects.values_list("job_id", flat=True)) == {bad_id, good_id}
    assert DeadLetter.objects.get(job_id=bad_id).args == ["\ufffd"]


def test_arguments_nested_past_the_recursion_limit_die_with_a_clear_error():
    deep = "[" * 100_000 + "]" * 100_000
    bad_id = _raw_job("tests.testapp.jobs.record", deep, attempts=5)
    good = jobs.record.enqueue("fine")
    run_burst(concurrency=2, prefetch=4)
    assert good.refresh().status == "succeeded"
    letter = DeadLetter.objects.get(job_id=bad_id)
    assert letter.error_class == "django_jobs.exceptions.MalformedPayload"
    assert "nested" in letter.error_message
    assert letter.attempts == 1


def test_an_exception_whose_str_raises_is_recorded_with_a_placeholder():
    handle = jobs.raises_unprintable.enqueue("u")
    after = jobs.record.enqueue("after-unprintable")
    run_burst(concurrency=1)
    letter = DeadLetter.objects.get(job_id=handle.id)
    assert letter.error_class.endswith("Unprintable")
    assert "could not be turned into text" in letter.error_message
    assert [entry["outcome"] for entry in handle.refresh().history] == ["failed"]
    assert after.refresh().status == "succeeded"


def test_enqueue_refuses_arguments_nested_too_deeply_with_a_clear_error():
    deep: list = []
    for _ in range(50_000):
        deep = [deep]
    with pytest.raises(TypeError, match="nested thousands of levels deep"):
        jobs.record.enqueue(deep)
    with pytest.raises(TypeError, match="nested thousands of levels deep"):
        jobs.record.enqueue({"k": deep})
