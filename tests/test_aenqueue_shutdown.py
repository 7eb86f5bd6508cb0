"""An event loop that ends while a cancelled ``aenqueue`` still reads its reply on:
``asyncio.run`` cancels a fire-and-forget call as it returns, and the task that
reads on starts after it took its list of tasks to cancel. The loop's shutdown
ends that task (its job's outcome unknown: the outbox keeps it, announced
pending), past MAX_LOOPS as well; a loop closed bare leaves it to the next
loop's first call, which ends its connection and logs the job's id."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
import redis
from asgiref.sync import async_to_sync

from django_jobs.broker import async_enqueue
from django_jobs.models import OutboxEntry
from tests.test_aenqueue import Heard, clients_of_this_process, no_listeners, run  # noqa: F401
from tests.test_aenqueue_cancel import eventually
from tests.testapp.jobs import record


async def fire_and_forget(admin: redis.Redis) -> None:
    """Returns with a call left waiting on its reply (Redis paused)."""
    await record.aenqueue("first")
    admin.client_pause(10_000, all=False)
    asyncio.create_task(record.aenqueue("fire and forget"))  # noqa: RUF006 (the point)
    await eventually(lambda: admin.info("clients")["blocked_clients"] == 1)


@pytest.fixture
def admin(private_redis):
    client = redis.Redis(port=private_redis.port, decode_responses=True)
    client.ping()  # connected: counted in ``before``
    yield client
    with contextlib.suppress(redis.ConnectionError):
        client.client_unpause()
    client.close()


def assert_kept_pending(heard: Heard) -> None:
    (kept,) = OutboxEntry.objects.all()
    assert kept.job["args_json"] == '["fire and forget"]'
    assert [d["status"] for _, d, _, _ in heard.events] == ["queued", "pending"]
    assert heard.events[1][1]["job_id"] == kept.job_id


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("runner", ["asyncio.run", "async_to_sync"])
def test_a_call_cancelled_by_its_loop_ending_is_kept_in_the_outbox(private_redis, admin, runner):
    record.enqueue("warm up")
    before = clients_of_this_process(private_redis)
    with Heard() as heard:
        if runner == "asyncio.run":
            run(lambda: fire_and_forget(admin))
        else:
            async_to_sync(fire_and_forget)(admin)
    assert_kept_pending(heard)
    assert list(async_enqueue._loops) == []
    asyncio.run(eventually(lambda: clients_of_this_process(private_redis) == before))


@pytest.mark.django_db(transaction=True)
def test_a_loop_past_the_bound_ends_its_calls_reading_on_too(private_redis, admin, monkeypatch):
    monkeypatch.setattr(async_enqueue, "MAX_LOOPS", 0)  # every loop past it
    record.enqueue("warm up")
    before = clients_of_this_process(private_redis)
    with Heard() as heard:
        run(lambda: fire_and_forget(admin))
    assert_kept_pending(heard)
    assert async_enqueue._unlisted == set()
    asyncio.run(eventually(lambda: clients_of_this_process(private_redis) == before))


@pytest.mark.parametrize("past_the_bound", [False, True])
def test_a_loop_closed_bare_with_a_call_reading_on_is_forgotten_by_the_next(
    private_redis, admin, monkeypatch, caplog, past_the_bound
):
    """Its task can no longer run: its socket is shut down and its job's id (never
    its arguments) logged, its outcome unknown."""
    if past_the_bound:
        monkeypatch.setattr(async_enqueue, "MAX_LOOPS", 0)
    record.enqueue("warm up")
    before = clients_of_this_process(private_redis)
    loop = asyncio.new_event_loop()

    async def cancelled() -> str:
        await record.aenqueue("first")
        admin.client_pause(10_000, all=False)
        call = asyncio.create_task(record.aenqueue("secret argument"))
        await eventually(lambda: admin.info("clients")["blocked_clients"] == 1)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        ((_, job_id),) = [
            entry
            for connections in [*async_enqueue._loops.values(), *async_enqueue._unlisted]
            for entry in connections.finishing.values()
        ]
        return job_id

    job_id = loop.run_until_complete(cancelled())
    loop.close()  # bare: neither its tasks cancelled nor its async generators closed
    admin.client_unpause()
    with caplog.at_level(logging.WARNING, "django_jobs.enqueue"):
        asyncio.run(record.aenqueue("next loop"))  # forgets the closed loop
    assert list(async_enqueue._loops) == [] and async_enqueue._unlisted == set()
    assert f"job {job_id}: its event loop was closed" in caplog.text
    assert "secret argument" not in caplog.text
    asyncio.run(eventually(lambda: clients_of_this_process(private_redis) == before))


@pytest.mark.django_db(transaction=True)
def test_a_large_request_half_sent_as_its_loop_ends_is_kept_and_relayed_once(
    private_redis, settings
):
    """Part of it still in the transport's buffer as the loop ends: Redis never gets
    it whole, so the outbox is all that keeps it; the relay then stores it once."""
    from django.test import override_settings

    from django_jobs import outbox
    from django_jobs.broker.connection import get_broker
    from tests.stalling_proxy import StallingProxy

    proxy = StallingProxy(private_redis.port)
    large = "x" * (6 << 20)
    jobs = {**settings.JOBS, "REDIS_URL": proxy.url, "MAX_PAYLOAD_BYTES": 8 << 20}
    try:
        with override_settings(JOBS=jobs):
            record.enqueue("warm up")

            async def half_sent() -> None:
                await record.aenqueue("first")
                (idle,) = async_enqueue._loops[asyncio.get_running_loop()]._idle
                transport = idle.connection._writer.transport
                proxy.stall()
                asyncio.create_task(record.aenqueue(large))  # noqa: RUF006 (the point)
                await eventually(transport.get_write_buffer_size)

            with Heard() as heard:
                run(half_sent)
            proxy.flow()
            assert [d["status"] for _, d, _, _ in heard.events] == ["queued", "pending"]
            assert OutboxEntry.objects.count() == 1
            outbox.relay(older_than_seconds=0)
            assert get_broker().counts("default").waiting == 3
            assert not OutboxEntry.objects.exists()
    finally:
        proxy.close()
