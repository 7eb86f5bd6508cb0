"""Redis down never loses a view's job: outside a transaction, an enqueue that
cannot reach Redis writes the job to the outbox, its handle says ``pending``, and
the relay publishes it once Redis is back; only when the database is unreachable
too does the enqueue raise."""

from __future__ import annotations

import pytest

from django_jobs import outbox
from django_jobs.broker.connection import get_broker
from django_jobs.handle import JobHandle
from django_jobs.models import OutboxEntry
from tests.helpers import run_burst
from tests.services import free_port
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_enqueue_while_redis_is_down_is_kept_in_the_outbox_and_runs_once(private_redis):
    private_redis.stop()
    handle = jobs.record.enqueue("while down")
    assert handle.status == "pending"
    assert list(OutboxEntry.objects.values_list("job_id", flat=True)) == [handle.id]
    # Redis still down: the handle and a look-up by id find the job in the outbox.
    assert handle.refresh().status == "pending"
    assert JobHandle.get(handle.id).status == "pending"

    private_redis.start()
    assert JobHandle.get(handle.id).status == "pending"  # Redis up, not yet relayed
    assert outbox.relay(older_than_seconds=0) == 1
    assert outbox.relay(older_than_seconds=0) == 0
    assert handle.refresh().status == "queued"
    run_burst()
    assert handle.refresh().status == "succeeded"
    assert Effect.objects.filter(key="while down").count() == 1


def test_a_batch_while_redis_is_down_is_kept_whole_and_published_once(private_redis):
    private_redis.stop()
    handles = jobs.record.enqueue_many([(f"b{i}",) for i in range(250)])  # three chunks
    assert {handle.status for handle in handles} == {"pending"}
    assert OutboxEntry.objects.count() == 250
    private_redis.start()
    assert outbox.relay(older_than_seconds=0) == 250
    assert get_broker().counts("default").waiting == 250
    assert [JobHandle.get(h.id).status for h in handles] == ["queued"] * 250


def test_a_delayed_job_kept_in_the_outbox_is_published_scheduled(private_redis):
    private_redis.stop()
    handle = jobs.record.using(delay=3600).enqueue("later")
    assert handle.status == "pending"
    private_redis.start()
    outbox.relay(older_than_seconds=0)
    assert handle.refresh().status == "scheduled"


def test_redis_and_the_database_both_unreachable_raise_a_clear_error(worker_processes):
    """In a process of its own, whose Redis and PostgreSQL ports have nothing behind them."""
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    code = (
        "from django_jobs.exceptions import EnqueueFailed\n"
        "from tests.testapp import jobs\n"
        "try:\n"
        "    jobs.record.enqueue('lost?')\n"
        "except EnqueueFailed as error:\n"
        "    print('RAISED', type(error.__cause__).__name__, error)\n"
    )
    process = worker_processes.manage(
        "shell",
        "-c",
        code,
        REDIS_URL=nobody,
        DJANGO_JOBS_TEST_DB="postgres",
        PGPORT=str(free_port()),
    )
    output = worker_processes.wait(process, timeout=60)
    assert "RAISED OperationalError Could not enqueue 1 job(s) of tests.testapp.jobs.record" in (
        output
    ), output
    assert "Redis is unreachable" in output
    assert "Nothing was stored" in output


def test_an_enqueue_while_a_redis_cluster_is_unreachable_is_kept_in_the_outbox(settings):
    """redis-py's cluster client raises its own errors (not RedisError) when no node
    answers; the enqueue path must still see Redis as away."""
    url = f"redis+cluster://127.0.0.1:{free_port()}/"
    settings.JOBS = {**settings.JOBS, "REDIS_URL": url}
    handle = jobs.record.enqueue("cluster down")
    assert handle.status == "pending"
    assert list(OutboxEntry.objects.values_list("job_id", flat=True)) == [handle.id]
