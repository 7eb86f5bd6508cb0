"""broker/reply.py: a single enqueue's reply read off the socket gives what redis-py's
parser gives, the same errors, and never leaves part of a reply for another call."""

from __future__ import annotations

import select
import threading

import pytest
import redis
from redis.connection import Connection
from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    NoScriptError,
    ResponseError,
    TimeoutError,
)

from django_jobs.broker.reply import read_reply
from tests.helpers import poll

pytestmark = pytest.mark.redis_only

REPLIES = [
    'return "queued"',
    "return 42",
    "return -7",
    "return nil",
    "return false",
    'return {1, "a", {2, "b", {}}, "é"}',
    'return redis.status_reply("OK")',
    'return redis.error_reply("ERR refused: a key of the wrong type")',
    'return {"x", redis.error_reply("ERR inside an array")}',
    'return string.rep("x", 300000)',  # longer than one recv: comes in pieces
    'return {string.rep("y", 100000), string.rep("z", 100000)}',
]


def _connection(server, **options) -> Connection:
    connection = Connection(port=server.port, **options)
    connection.connect()
    return connection


def _as_redis_py_reads(connection: Connection, *command) -> object:
    connection.send_command(*command)
    try:
        return connection.read_response()
    except ResponseError as error:
        return error


def _comparable(reply: object) -> object:
    if isinstance(reply, ResponseError):
        return (type(reply), str(reply))
    if isinstance(reply, list):
        return [_comparable(item) for item in reply]
    return reply


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode", [True, False])
def test_each_kind_of_reply_reads_as_redis_py_reads_it(private_redis, protocol, decode):
    ours = _connection(private_redis, protocol=protocol, decode_responses=decode)
    theirs = _connection(private_redis, protocol=protocol, decode_responses=decode)
    for script in REPLIES:
        ours.send_command("EVAL", script, 0)
        got = read_reply(ours)
        assert _comparable(got) == _comparable(_as_redis_py_reads(theirs, "EVAL", script, 0))
        assert ours._sock is not None, script  # the connection serves the next call
    ours.send_command("EVALSHA", "0" * 40, 0)
    assert isinstance(read_reply(ours), NoScriptError)
    ours.send_command("PING")
    assert read_reply(ours) in ("PONG", b"PONG")


def test_a_resp3_push_before_the_reply_is_handed_on_and_the_reply_read(private_redis):
    connection = _connection(private_redis, protocol=3)
    pushes: list[object] = []
    connection._parser.set_invalidation_push_handler(pushes.append)
    for command in (("CLIENT", "TRACKING", "ON"), ("GET", "tracked")):
        connection.send_command(*command)
        read_reply(connection)
    redis.Redis(port=private_redis.port).set("tracked", "changed")  # an invalidation push
    poll(lambda: _socket_readable(connection), timeout=10)
    connection.send_command("EVAL", 'return "queued"', 0)
    assert read_reply(connection) == b"queued"
    assert pushes and connection._sock is not None
    connection.send_command("PING")
    assert read_reply(connection) == b"PONG"


def _socket_readable(connection: Connection) -> bool:
    return bool(select.select([connection._sock], [], [], 0)[0])


def test_an_error_redis_py_raises_is_raised_and_the_connection_dropped(private_redis):
    connection = _connection(private_redis)
    connection.send_command("EVAL", 'return redis.error_reply("LOADING Redis is loading")', 0)
    with pytest.raises(BusyLoadingError):
        read_reply(connection)
    assert connection._sock is None


@pytest.mark.parametrize("protocol", [2, 3])
def test_an_error_redis_py_raises_inside_an_array_is_raised_as_redis_py_raises_it(
    private_redis, protocol
):
    script = 'return {1, redis.error_reply("LOADING Redis is loading"), "after"}'
    theirs = _connection(private_redis, protocol=protocol)
    theirs.send_command("EVAL", script, 0)
    with pytest.raises(BusyLoadingError):
        theirs.read_response()  # redis-py: raised, not returned in the list
    ours = _connection(private_redis, protocol=protocol)
    ours.send_command("EVAL", script, 0)
    with pytest.raises(BusyLoadingError):
        read_reply(ours)
    assert ours._sock is None  # the rest of the reply is never read by another call


def test_a_reply_later_than_the_socket_timeout_drops_the_connection(private_redis):
    connection = _connection(private_redis, socket_timeout=0.2)
    connection.send_command("BLPOP", "nothing-here", 1)  # answers in a second
    with pytest.raises(TimeoutError):
        read_reply(connection)
    assert connection._sock is None  # the late reply can never be read as another's
    connection.send_command("PING")  # reconnects
    assert read_reply(connection) == b"PONG"


def test_a_connection_the_server_closes_mid_call_is_a_connection_error(private_redis):
    connection = _connection(private_redis, client_name="reply-test")
    admin = redis.Redis(port=private_redis.port, decode_responses=True)
    connection.send_command("BLPOP", "nothing-here", 0)  # waits until killed
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(read_reply(connection))
        except ConnectionError as error:
            outcome.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    poll(
        lambda: any(c["name"] == "reply-test" and c["cmd"] == "blpop" for c in admin.client_list()),
        timeout=10,
    )
    admin.client_kill_filter(_type="normal", skipme=True)  # every client but admin
    reader.join(timeout=10)
    assert isinstance(outcome[0], ConnectionError)
    assert connection._sock is None
