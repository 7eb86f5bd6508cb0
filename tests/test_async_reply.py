"""broker/async_reply.py: a reply read off an asyncio connection's stream gives what
redis-py's parser gives, the same errors, and never leaves part of a reply for
another call; a cancelled read goes on where it stopped."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
from redis.asyncio.connection import Connection
from redis.exceptions import BusyLoadingError, ConnectionError, NoScriptError, TimeoutError

from django_jobs.broker.async_reply import Link
from django_jobs.broker.wire import CommandTemplate
from tests.stalling_proxy import StallingProxy
from tests.test_reply import REPLIES, _comparable

pytestmark = pytest.mark.redis_only


def command(*arguments: Any) -> bytes:
    return CommandTemplate(arguments).pack()


async def link_to(port: int, **options: Any) -> Link:
    link = Link(Connection(port=port, **options))
    await link.open()
    return link


async def as_redis_py_reads(connection: Connection, *arguments: Any) -> object:
    await connection.send_command(*arguments)
    try:
        return await connection.read_response()
    except redis.ResponseError as error:
        return error


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode", [True, False])
def test_each_kind_of_reply_reads_as_redis_py_reads_it(private_redis, protocol, decode):
    async def compare() -> None:
        ours = await link_to(private_redis.port, protocol=protocol, decode_responses=decode)
        theirs = Connection(port=private_redis.port, protocol=protocol, decode_responses=decode)
        for script in REPLIES:
            ours.send(command("EVAL", script, 0))
            got = await ours.read()
            expected = await as_redis_py_reads(theirs, "EVAL", script, 0)
            assert _comparable(got) == _comparable(expected), script
            assert ours.clean and ours.connection.is_connected, script
        ours.send(command("EVALSHA", "0" * 40, 0))
        assert isinstance(await ours.read(), NoScriptError)
        ours.send(command("PING") + command("PING"), replies=2)  # two in one write
        pong = "PONG" if decode else b"PONG"
        assert [await ours.read(), await ours.read()] == [pong, pong]
        assert ours.clean
        await ours.connection.disconnect()
        await theirs.disconnect()

    asyncio.run(compare())


def test_a_resp3_push_before_the_reply_is_handed_on_and_the_reply_read(private_redis):
    async def pushed() -> None:
        link = await link_to(private_redis.port, protocol=3)
        pushes: list[object] = []
        link.connection._parser.set_invalidation_push_handler(pushes.append)
        for arguments in (("CLIENT", "TRACKING", "ON"), ("GET", "tracked")):
            link.send(command(*arguments))
            await link.read()
        redis.Redis(port=private_redis.port).set("tracked", "changed")  # an invalidation
        link.send(command("EVAL", 'return "queued"', 0))
        assert await link.read() == b"queued"
        assert pushes and link.clean
        await link.connection.disconnect()

    asyncio.run(pushed())


def test_an_error_redis_py_raises_is_raised(private_redis):
    async def loading() -> None:
        link = await link_to(private_redis.port)
        link.send(command("EVAL", 'return redis.error_reply("LOADING Redis is loading")', 0))
        with pytest.raises(BusyLoadingError):
            await link.read()
        await link.connection.disconnect()

    asyncio.run(loading())


def test_an_error_redis_py_raises_inside_an_array_is_raised_as_redis_py_raises_it(private_redis):
    async def nested() -> None:
        script = 'return {1, redis.error_reply("LOADING Redis is loading"), "after"}'
        theirs = Connection(port=private_redis.port)
        await theirs.send_command("EVAL", script, 0)
        with pytest.raises(BusyLoadingError):
            await theirs.read_response()  # redis-py: raised, not returned in the list
        link = await link_to(private_redis.port)
        link.send(command("EVAL", script, 0))
        with pytest.raises(BusyLoadingError):
            await link.read()
        assert not link.clean  # what is left of the reply is never read: the link goes
        await link.connection.disconnect()
        await theirs.disconnect()

    asyncio.run(nested())


def test_a_reply_later_than_the_socket_timeout_is_a_timeout(private_redis):
    async def late() -> None:
        link = await link_to(private_redis.port, socket_timeout=0.2)
        link.send(command("BLPOP", "nothing-here", 1))  # answers in a second
        with pytest.raises(TimeoutError):
            await link.read()
        assert not link.clean  # its reply is still owed: the caller drops the link
        await link.connection.disconnect()

    asyncio.run(late())


def test_a_reply_that_came_while_the_loop_was_blocked_past_the_deadline_is_read(
    private_redis,
):
    """The watch and the reply's bytes in the same turn of the loop: the read is no
    longer waiting, so it gets its reply, and nothing is left on the stream for
    the next call (which would time out at once, after its command ran)."""
    proxy = StallingProxy(private_redis.port)

    async def blocked() -> None:
        link = await link_to(proxy.port, socket_timeout=0.2)
        proxy.hold_replies(0)
        link.send(command("PING"))
        reading = asyncio.create_task(link.read())
        while not (proxy.held_replies and link.deadline):  # the read waits
            await asyncio.sleep(0.01)
        proxy.flow()
        time.sleep(0.5)  # blocks the loop: the reply comes in, the deadline passes
        assert await reading in ("PONG", b"PONG", True)
        assert link.clean
        link.send(command("PING"))
        assert await link.read() in ("PONG", b"PONG", True)
        await link.connection.disconnect()

    try:
        asyncio.run(blocked())
    finally:
        proxy.close()


def test_a_link_with_an_error_left_on_its_stream_is_not_clean(private_redis):
    async def stray() -> None:
        link = await link_to(private_redis.port)
        assert link.clean
        link.connection._reader.set_exception(TimeoutError())
        assert not link.clean  # the caller drops it: the next read would fail
        await link.connection.disconnect()

    asyncio.run(stray())


def test_a_connection_the_server_closes_mid_call_is_a_connection_error(private_redis):
    admin = redis.Redis(port=private_redis.port, decode_responses=True)

    async def killed() -> None:
        link = await link_to(private_redis.port, client_name="reply-test")
        link.send(command("BLPOP", "nothing-here", 0))  # waits until killed
        reading = asyncio.create_task(link.read())
        while not any(c["cmd"] == "blpop" for c in admin.client_list()):
            await asyncio.sleep(0.01)
        admin.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(reading, 10)

    asyncio.run(killed())
    admin.close()


def test_a_read_cancelled_with_part_of_a_reply_goes_on_where_it_stopped(private_redis):
    proxy = StallingProxy(private_redis.port)
    script = 'return {string.rep("y", 100000), "after"}'

    async def cut() -> None:
        link = await link_to(proxy.port)
        proxy.hold_replies(50_000)  # half of the first string
        link.send(command("EVAL", script, 0))
        reading = asyncio.create_task(link.read())
        while len(link.unread) < 50_000:
            await asyncio.sleep(0.01)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        assert link.owed == 1
        proxy.flow()
        assert await asyncio.wait_for(link.read(), 10) == [b"y" * 100000, b"after"]
        assert link.clean
        await link.connection.disconnect()

    try:
        asyncio.run(cut())
    finally:
        proxy.close()
