"""A cancelled ``aenqueue`` (a client that went away, a request's timeout): once
its request may have reached Redis, its job is never lost and never taken for
another call's. Stored: its event is emitted; its reply lost: the outbox keeps it,
as a sync call whose reply is lost; cancelled before anything was sent: nothing
is stored. The connection is reused only with nothing owed on it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from django.test import override_settings

from django_jobs.broker import async_enqueue
from django_jobs.broker.connection import get_broker
from django_jobs.models import OutboxEntry
from tests.stalling_proxy import StallingProxy
from tests.test_aenqueue import Heard, no_listeners, run  # noqa: F401 (an autouse fixture)
from tests.test_layout_upgrade import store_the_old_way
from tests.testapp.jobs import record


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """check()'s first truthy value, the loop running meanwhile."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(0.01)
    return value


def finishing() -> dict[asyncio.Task[None], Any]:
    """The running loop's cancelled calls still reading on."""
    return async_enqueue._loops[asyncio.get_running_loop()].finishing


async def cancelled_while_paused(admin: redis.Redis, last_words: Callable[[], None]) -> None:
    """An ``aenqueue`` cancelled while Redis holds its script (CLIENT PAUSE WRITE):
    its CancelledError comes at once, with the reply still unread; then
    ``last_words()`` before Redis is unpaused."""
    admin.client_pause(10_000, all=False)
    try:
        call = asyncio.create_task(record.aenqueue("cancelled"))
        await eventually(lambda: admin.info("clients")["blocked_clients"] == 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert not async_enqueue._loops[asyncio.get_running_loop()]._idle
        last_words()
    finally:
        with contextlib.suppress(redis.ConnectionError):
            admin.client_unpause()


def test_a_call_cancelled_while_redis_holds_its_reply(private_redis):
    """Its request was out: Redis stores the job, the reply is read in the
    background, its event is emitted, and the connection is reused only then,
    with no stray reply for the next call to take as its own."""
    record.enqueue("warm up")
    admin = redis.Redis(port=private_redis.port, decode_responses=True)

    async def cancelled_then_next() -> tuple[Any, int]:
        await record.aenqueue("first")  # the loop's connection, now idle
        connections = async_enqueue._loops[asyncio.get_running_loop()]
        opened = admin.info("stats")["total_connections_received"]
        await cancelled_while_paused(admin, lambda: None)
        await eventually(lambda: connections._idle)  # the reply read, the connection back
        after = await record.aenqueue("after")
        return after, admin.info("stats")["total_connections_received"] - opened

    with Heard() as heard:
        (after, opened), hops = run(cancelled_then_next)
    assert (opened, hops) == (0, 3)  # the same connection throughout; the events' hops
    announced = [data["job_id"] for _, data, stored, _ in heard.events if stored]
    assert len(announced) == 3 and announced[2] == after.id
    broker = get_broker()
    assert [broker.get_job("default", job_id)["args"] for job_id in announced] == [
        '["first"]',
        '["cancelled"]',
        '["after"]',
    ]
    admin.close()


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_call_whose_reply_is_lost_is_kept_in_the_outbox(private_redis, caplog):
    """Redis went away before answering: the job may or may not be stored, so it
    goes to the outbox (as a sync call's whose reply is lost), announced pending;
    the relay's publish makes no second job if Redis had stored it."""
    record.enqueue("warm up")
    admin = redis.Redis(port=private_redis.port, decode_responses=True)

    async def lost_then_next() -> Any:
        await record.aenqueue("first")
        connections = async_enqueue._loops[asyncio.get_running_loop()]
        await cancelled_while_paused(admin, private_redis.stop)  # the reply never comes
        await eventually(lambda: not finishing())
        assert not connections._idle
        private_redis.start()
        return await record.aenqueue("after")  # on a new connection

    with Heard() as heard:
        after, hops = run(lambda: lost_then_next())
    assert after.status == "queued"
    assert hops == 3  # the events of "first" and "after"; the outbox write and its event
    assert get_broker().get_job("default", after.id)["args"] == '["after"]'
    (kept,) = OutboxEntry.objects.all()
    assert kept.job["args_json"] == '["cancelled"]'
    assert (kept.job_id, "pending") in [(d["job_id"], d["status"]) for _, d, _, _ in heard.events]
    assert "kept in the outbox" in caplog.text
    admin.close()


@pytest.fixture
def stalling(private_redis, settings):
    """A proxy in front of the test's Redis, which the app talks to."""
    proxy = StallingProxy(private_redis.port)
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": proxy.url}):
        yield proxy
    proxy.close()


@pytest.mark.django_db(transaction=True)
def test_a_call_cancelled_while_connecting_stores_nothing(stalling):
    """Nothing was sent: no job, no event, no outbox row; the next call connects
    afresh."""
    record.enqueue("warm up")

    async def cancelled_then_next() -> Any:
        connecting = stalling.accepted + 1
        stalling.stall()  # a new loop's connection: its handshake waits
        call = asyncio.create_task(record.aenqueue("cancelled"))
        await eventually(lambda: stalling.accepted == connecting)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert not finishing()  # nothing to read on
        stalling.flow()
        return await record.aenqueue("after")

    with Heard() as heard:
        after, _ = run(cancelled_then_next)
    assert after.status == "queued"
    assert get_broker().counts("default").waiting == 2  # the warm-up's and the last one's
    assert [d["job_id"] for _, d, _, _ in heard.events] == [after.id]
    assert not OutboxEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_call_cancelled_while_its_request_is_being_sent_is_stored_and_announced(
    stalling, settings
):
    """A large request, stalled on its way: once any of it was written, Redis may
    run it, so the exchange goes on in the background and its event comes."""
    large = "x" * (6 << 20)
    jobs_settings = {**settings.JOBS, "REDIS_URL": stalling.url, "MAX_PAYLOAD_BYTES": 8 << 20}
    with override_settings(JOBS=jobs_settings):
        record.enqueue("warm up")

        async def cancelled_mid_send() -> Any:
            await record.aenqueue("first")  # the loop's connection, now idle
            (idle,) = async_enqueue._loops[asyncio.get_running_loop()]._idle
            transport = getattr(idle, "connection", idle)._writer.transport
            stalling.stall()
            call = asyncio.create_task(record.aenqueue(large))
            await eventually(transport.get_write_buffer_size)  # the rest waits to be sent
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            stalling.flow()
            await eventually(lambda: not finishing(), timeout=30)

        with Heard() as heard:
            run(cancelled_mid_send)
    ids = [d["job_id"] for _, d, stored, _ in heard.events if stored]
    assert len(ids) == 2  # "first" and the cancelled call's
    assert get_broker().get_job("default", ids[1])["args"] == f'["{large}"]'
    assert not OutboxEntry.objects.exists()


def noscript_reply_length(port: int) -> int:
    """The bytes of Redis' NOSCRIPT reply, read off a socket of its own."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"EVALSHA " + b"0" * 40 + b" 0\r\n")
        reply = sock.recv(1024)
    assert reply.startswith(b"-NOSCRIPT") and reply.endswith(b"\r\n")
    return len(reply)


@pytest.mark.parametrize("where", ["before its NOSCRIPT", "during the script's load"])
def test_a_call_cancelled_around_a_script_reload_is_stored_and_announced(stalling, where):
    """Redis lost its scripts (a restart, SCRIPT FLUSH): the exchange loads the script
    and sends the call again, in the background if the caller is gone meanwhile."""
    record.enqueue("warm up")
    held = 0 if where == "before its NOSCRIPT" else noscript_reply_length(stalling.port)

    async def cancelled_then_next() -> Any:
        await record.aenqueue("first")
        connections = async_enqueue._loops[asyncio.get_running_loop()]
        get_broker().client.script_flush()
        stalling.hold_replies(held)
        call = asyncio.create_task(record.aenqueue("cancelled"))
        await eventually(lambda: stalling.held_replies)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        stalling.flow()
        await eventually(lambda: connections._idle)  # the exchange over, the link back
        return await record.aenqueue("after")

    with Heard() as heard:
        after, _ = run(cancelled_then_next)
    ids = [d["job_id"] for _, d, stored, _ in heard.events if stored]
    assert len(ids) == 3 and ids[2] == after.id
    assert get_broker().get_job("default", ids[1])["args"] == '["cancelled"]'


@pytest.mark.django_db(transaction=True)
def test_a_loop_ending_before_a_cancelled_call_is_answered_keeps_its_job(private_redis):
    """``asyncio.run`` cancels the task reading on as it ends: the outcome is unknown,
    so the job goes to the outbox."""
    record.enqueue("warm up")
    admin = redis.Redis(port=private_redis.port, decode_responses=True)

    async def cancelled_then_gone() -> None:
        await record.aenqueue("first")
        await cancelled_while_paused(admin, lambda: None)
        assert finishing()  # still reading on as the loop ends

    with Heard() as heard:
        run(cancelled_then_gone)
    (kept,) = OutboxEntry.objects.all()
    assert kept.job["args_json"] == '["cancelled"]'
    assert [d["status"] for _, d, _, _ in heard.events] == ["queued", "pending"]
    admin.close()


def test_a_cancelled_call_that_met_the_old_layout_is_written_by_the_thread_path(private_redis):
    """The short call answers AGAIN (nothing written) when the waiting key is an
    earlier build's set: the job then goes again through the sync path, in a
    thread, as the caller's call would have, and is announced."""
    record.enqueue("warm up")  # registered: later calls take the short script
    client = redis.Redis(port=private_redis.port, decode_responses=True)
    client.delete(get_broker().keys("default").waiting)
    store_the_old_way(client, "old", "old", 0, 1)

    async def cancelled() -> None:
        await cancelled_while_paused(client, lambda: None)
        await eventually(lambda: not finishing())

    with Heard() as heard:
        run(cancelled)
    ((_, data, stored, _),) = heard.events
    assert stored and data["status"] == "queued"
    assert get_broker().get_job("default", data["job_id"])["args"] == '["cancelled"]'
    assert client.type(get_broker().keys("default").waiting) == "list"
    client.close()
