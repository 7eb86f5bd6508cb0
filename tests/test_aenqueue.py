"""``aenqueue`` in the event loop (broker/async_enqueue.py): a plain job on a
standalone Redis goes out on the loop's own asyncio connection, stores what
``enqueue()`` stores and answers as it does; everything else keeps the thread."""

from __future__ import annotations

import asyncio
import functools
import gc
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.test import override_settings
from django.utils import timezone
from redis.exceptions import ResponseError

from django_jobs import events, signals
from django_jobs.broker import async_enqueue
from django_jobs.broker.connection import client_settings, get_broker
from django_jobs.exceptions import EnqueueIncomplete
from django_jobs.models import OutboxEntry
from django_jobs.testing.recorder import JobRecorder
from tests.helpers import poll
from tests.redis_sentinel import SentinelSetup
from tests.redis_servers import Certificates, Server, tls_server
from tests.services import RedisServer
from tests.stalling_proxy import StallingProxy
from tests.test_single_enqueue import _stored
from tests.testapp.jobs import record
from tests.testapp.models import Effect


@pytest.fixture(autouse=True)
def no_listeners():
    """Listeners keep the thread: this process may have some (the Tasks backend's
    subscribes as it is set up), which these tests set aside."""
    kept = list(events.listeners)
    events.listeners.clear()
    yield
    events.listeners[:] = kept


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor, which ``sync_to_async(thread_sensitive=False)``
    runs on: every thread hop is one ``submit``."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.hops = 0

    def submit(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.hops += 1
        return super().submit(*args, **kwargs)


def run(call: Callable[[], Awaitable[Any]]) -> tuple[Any, int]:
    """``call()`` on a new event loop; its result and the thread hops it made."""
    executor = CountingExecutor()

    async def main() -> Any:
        asyncio.get_running_loop().set_default_executor(executor)
        return await call()

    try:
        return asyncio.run(main()), executor.hops
    finally:
        executor.shutdown()


def test_a_plain_job_is_stored_as_enqueue_stores_it_without_a_thread_hop():
    sync = record.enqueue("same")  # the first enqueue builds the broker (sync)
    handle, hops = run(lambda: record.aenqueue("same"))
    assert hops == 0
    assert (handle.status, handle.queue, handle.name) == ("queued", sync.queue, sync.name)
    assert handle.id != sync.id
    assert _stored(handle.queue, handle.id) == _stored(sync.queue, sync.id)


def test_per_call_options_and_keywords_take_the_native_path_too():
    call = record.using(priority=5, delay=60, queue="other")
    sync = call.enqueue(key="kw, ünïcode")
    handle, hops = run(lambda: call.aenqueue(key="kw, ünïcode"))
    assert hops == 0
    assert handle.status == "scheduled"
    assert _stored(handle.queue, handle.id) == _stored(sync.queue, sync.id)


def test_the_first_enqueue_of_a_process_or_queue_takes_the_thread():
    handle, hops = run(lambda: record.aenqueue("first"))  # no broker yet
    assert (handle.status, hops) == ("queued", 1)
    handle, hops = run(lambda: record.using(queue="fresh").aenqueue("first of its queue"))
    assert (handle.status, hops) == ("queued", 1)
    handle, hops = run(lambda: record.using(queue="fresh").aenqueue("then native"))
    assert (handle.status, hops) == ("queued", 0)


@pytest.mark.parametrize(
    "options",
    [
        {"dedupe_key": "d"},
        {"limit_by": "tenant:7"},
        {"run_at": timezone.now() + timedelta(hours=1)},
    ],
)
def test_jobs_the_template_leaves_out_take_the_thread(options):
    record.enqueue("warm up")
    handle, hops = run(lambda: record.using(**options).aenqueue("left out"))
    assert hops == 1
    assert handle.status in ("queued", "scheduled")
    assert get_broker().get_job(handle.queue, handle.id) is not None


class Heard:
    """A listener that notes each event with the job's stored state at that moment
    (the event must come after the write) and the thread it ran in."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], bool, int]] = []

    def __call__(self, event: str, **data: Any) -> None:
        if event == "enqueued":
            pending = data["status"] == "pending"  # in the outbox: Redis is down
            stored = pending or get_broker().get_job(data["queue"], data["job_id"]) is not None
            self.events.append((event, data, stored, threading.get_ident()))

    def __enter__(self) -> Heard:
        events.subscribe(self)
        return self

    def __exit__(self, *exc: object) -> None:
        events.unsubscribe(self)


def test_with_a_listener_the_job_is_written_on_the_loop_then_announced_in_a_thread():
    record.enqueue("warm up")
    with Heard() as heard:
        record.enqueue("heard")
        loop_thread: list[int] = []

        async def on_the_loop() -> Any:
            loop_thread.append(threading.get_ident())
            handle = await record.aenqueue("heard")
            assert asyncio.get_running_loop() in async_enqueue._loops  # written natively
            return handle

        handle, hops = run(on_the_loop)
    assert (handle.status, hops) == ("queued", 1)  # the event's hop, not the write's
    (_, sync_data, _, _), (event, data, stored, thread) = heard.events
    assert (event, stored) == ("enqueued", True)
    assert data == {**sync_data, "job_id": handle.id}
    assert sync_data.keys() == {"job_id", "name", "queue", "status"}
    assert thread != loop_thread[0]


@pytest.mark.django_db(transaction=True)
def test_a_job_enqueued_receiver_may_use_the_orm():
    record.enqueue("warm up")

    def receiver(sender: str, job_id: str, queue: str, **kwargs: Any) -> None:
        stored = get_broker().get_job(queue, job_id) is not None
        Effect.objects.create(key=f"{sender}:{job_id}:{stored}")

    async def three() -> Any:
        handles = await asyncio.gather(*(record.aenqueue(f"r{i}") for i in range(3)))
        assert asyncio.get_running_loop() in async_enqueue._loops  # written natively
        return handles

    signals.job_enqueued.connect(receiver)
    try:
        handles, hops = run(three)
    finally:
        signals.job_enqueued.disconnect(receiver)
    assert hops == 3
    assert sorted(Effect.objects.values_list("key", flat=True)) == sorted(
        f"{record.name}:{h.id}:True" for h in handles
    )


@pytest.mark.django_db(transaction=True)
def test_with_a_listener_a_job_kept_in_the_outbox_is_announced_as_pending(private_redis):
    record.enqueue("warm up")

    async def down_between() -> Any:
        await record.aenqueue("before")
        private_redis.stop()
        return await record.aenqueue("while down")

    with Heard() as heard:
        handle, hops = run(down_between)
    assert (handle.status, hops) == ("pending", 2)  # the first's event; the outbox and its event
    assert [(data["job_id"], data["status"]) for _, data, _, _ in heard.events][1:] == [
        (handle.id, "pending")
    ]


@pytest.mark.django_db(transaction=True)  # the job runs, and writes its Effect
def test_eager_keeps_the_thread(settings):
    record.enqueue("warm up")
    with override_settings(JOBS={**settings.JOBS, "EAGER": True}):
        handle, hops = run(lambda: record.aenqueue("inline"))
    assert hops == 1
    assert handle.status == "succeeded"


def test_the_jobs_fixture_records_instead_of_redis():
    record.enqueue("warm up")
    with JobRecorder() as recorder:  # what the pytest ``jobs`` fixture sets up
        handle, hops = run(lambda: record.aenqueue("recorded"))
    assert hops == 1
    assert [job.args for job in recorder.enqueued] == [["recorded"]]
    assert get_broker().get_job(handle.queue, handle.id) is None


@pytest.mark.django_db  # the test's transaction is open on the loop's thread
def test_an_open_transaction_keeps_the_thread():
    record.enqueue("warm up")
    handle, hops = run(lambda: record.aenqueue("in a transaction"))
    assert hops == 1
    assert handle.status == "queued"


def test_two_event_loops_in_a_row_each_get_their_own_connections():
    record.enqueue("warm up")
    loops: list[asyncio.AbstractEventLoop] = []

    async def on_a_loop(text: str) -> Any:
        handle = await record.aenqueue(text)
        loops.extend(async_enqueue._loops)
        return handle

    first, hops_first = run(lambda: on_a_loop("loop 1"))
    assert list(async_enqueue._loops) == []  # closed as the loop shut down
    second, hops_second = run(lambda: on_a_loop("loop 2"))
    assert (first.status, second.status, hops_first, hops_second) == ("queued", "queued", 0, 0)
    assert len(set(loops)) == 2
    assert list(async_enqueue._loops) == []


def test_loops_of_several_threads_at_once_each_get_their_own_connections():
    record.enqueue("warm up")

    def on_a_thread(thread: int) -> list[str]:
        async def calls() -> list[Any]:
            return [await record.aenqueue(f"t{thread}-{i}") for i in range(20)]

        handles, hops = run(calls)
        assert hops == 0
        return [h.status for h in handles]

    with ThreadPoolExecutor(max_workers=4) as threads:
        results = list(threads.map(on_a_thread, range(8)))
    assert results == [["queued"] * 20] * 8


def test_concurrent_calls_on_one_loop_each_get_their_reply():
    record.enqueue("warm up")

    async def many() -> list[Any]:
        return await asyncio.gather(*(record.aenqueue(f"c{i}") for i in range(50)))

    handles, hops = run(many)
    assert hops == 0
    assert [get_broker().get_job("default", h.id)["args"] for h in handles] == [
        f'["c{i}"]' for i in range(50)
    ]


def test_scripts_flushed_are_loaded_again(private_redis):
    record.enqueue("warm up")

    async def flushed_between() -> list[Any]:
        before = await record.aenqueue("before")
        get_broker().client.script_flush()
        return [before, await record.aenqueue("after")]

    handles, hops = run(flushed_between)
    assert ([h.status for h in handles], hops) == (["queued", "queued"], 0)


@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_closed_while_idle_is_replaced(private_redis):
    record.enqueue("warm up")

    async def restarted_between() -> list[Any]:
        before = await record.aenqueue("before")
        private_redis.stop()
        private_redis.start()
        return [before, await record.aenqueue("after")]

    handles, hops = run(restarted_between)
    assert ([h.status for h in handles], hops) == (["queued", "queued"], 0)
    assert not OutboxEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_redis_down_keeps_the_job_in_the_outbox(private_redis):
    record.enqueue("warm up")

    async def down_between() -> list[Any]:
        before = await record.aenqueue("before")  # native: no hop
        private_redis.stop()
        return [before, await record.aenqueue("while down")]

    (before, handle), hops = run(down_between)
    assert (before.status, handle.status) == ("queued", "pending")
    assert hops == 1  # the outbox write, in a thread
    assert list(OutboxEntry.objects.values_list("job_id", flat=True)) == [handle.id]


@pytest.mark.django_db(transaction=True)
def test_a_refusal_raises_what_enqueue_raises(settings):
    server = RedisServer(options=("--maxmemory", "2mb", "--maxmemory-policy", "noeviction"))
    server.start()
    try:
        with override_settings(JOBS={**settings.JOBS, "REDIS_URL": server.url}):
            record.enqueue("warm up")
            filler = "x" * 20_000

            async def fill() -> None:
                for _ in range(1000):
                    await record.aenqueue(filler)

            with pytest.raises(EnqueueIncomplete) as raised:
                run(fill)
            assert isinstance(raised.value, ResponseError)
            assert raised.value.not_stored and not raised.value.stored
            assert filler not in str(raised.value)
            assert not OutboxEntry.objects.exists()
    finally:
        server.cleanup()


# -- the servers users run --------------------------------------------------------


@pytest.fixture
def started():
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.cleanup()


def native_on(settings, url: str, options: dict | None = None) -> None:
    """``aenqueue`` on this server stores what ``enqueue()`` does, on the loop."""
    with override_settings(
        JOBS={**settings.JOBS, "REDIS_URL": url, "REDIS_OPTIONS": options or {}}
    ):
        sync = record.enqueue("same")
        connections = get_broker().client.info("stats")["total_connections_received"]

        async def five() -> list[Any]:
            return [await record.aenqueue("same") for _ in range(5)]

        handles, hops = run(five)
        assert ([h.status for h in handles], hops) == (["queued"] * 5, 0)
        assert _stored(handles[0].queue, handles[0].id) == _stored(sync.queue, sync.id)
        # One connection of the loop's, reused (the info call's own is counted too).
        after = get_broker().client.info("stats")["total_connections_received"]
        assert after - connections <= 2


def test_tls_with_a_client_certificate(settings, started):
    certificates = Certificates(Path(tempfile.mkdtemp(prefix="django-jobs-tls-")))
    server = tls_server(certificates, client_certificates=True)
    started.append(server)
    options = {
        "ssl_ca_certs": str(certificates.ca),
        "ssl_cert_reqs": "required",
        "ssl_certfile": str(certificates.client_cert),
        "ssl_keyfile": str(certificates.client_key),
    }
    native_on(settings, f"rediss://127.0.0.1:{server.port}/0", options)


def test_a_unix_socket_with_a_password(settings, started):
    directory = Path(tempfile.mkdtemp(prefix="django-jobs-unix-"))
    socket_path = directory / "redis.sock"
    server = Server(
        ["--unixsocket", str(socket_path), "--unixsocketperm", "700", "--requirepass", "s3cret"],
        connect={"password": "s3cret"},
        directory=directory,
    ).start()
    started.append(server)
    native_on(settings, f"unix://:s3cret@{socket_path}?db=2")


def test_sentinel_keeps_the_thread(settings):
    setup = SentinelSetup()
    try:
        with override_settings(JOBS={**settings.JOBS, "REDIS_URL": setup.url}):
            sync = record.enqueue("warm up")
            handle, hops = run(lambda: record.aenqueue("through sentinel"))
            assert (handle.status, hops) == ("queued", 1)
            assert _stored(handle.queue, handle.id) == _stored(sync.queue, sync.id) | {
                "args": '["through sentinel"]'
            }
    finally:
        setup.cleanup()


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("redis+sentinel://127.0.0.1:26379/mymaster/0", {}),
        ("redis+cluster://127.0.0.1:7000/", {}),
        ("redis://127.0.0.1:7000/0", {"cluster": True}),
        ("rediss://127.0.0.1:6380/0", {"ssl_validate_ocsp": True}),  # sync connections only
    ],
)
def test_sentinel_cluster_and_sync_only_options_keep_the_thread(url, options):
    assert async_enqueue.connection_factory(url, options) is None


def test_standalone_servers_get_a_connection_factory():
    for url in ("redis://127.0.0.1:6379/0", "rediss://h:6380/1", "unix:///run/redis.sock"):
        assert async_enqueue.connection_factory(url, {}) is not None


# -- event loops that come and go -------------------------------------------------


def clients_of_this_process(server: RedisServer) -> int:
    """Connections to ``server`` from this process, less the one asking."""
    client = redis.Redis(port=server.port, decode_responses=True)
    try:
        return len(client.client_list()) - 1
    finally:
        client.close()


def test_async_to_sync_leaves_no_connection_open_per_call(private_redis):
    """Each ``async_to_sync`` call runs a new event loop; its connection is closed
    as the loop shuts down, not left to the garbage collector."""
    record.enqueue("warm up")
    # What earlier tests left to the collector (a finished thread's database
    # connection, which psycopg warns about) is not this test's.
    gc.collect()
    before = clients_of_this_process(private_redis)
    enqueue = async_to_sync(record.aenqueue)
    gc.disable()  # what the garbage collector would close must not hide a leak
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always", ResourceWarning)
            handles = [enqueue(f"call {n}") for n in range(30)]
            assert clients_of_this_process(private_redis) - before <= 1
            gc.collect()
    finally:
        gc.enable()
    assert [h.status for h in handles] == ["queued"] * 30
    leaks = [str(w.message) for w in warned if w.category is ResourceWarning]
    assert [leak for leak in leaks if "psycopg" not in leak] == []  # Redis' sockets
    assert list(async_enqueue._loops) == []


def test_loops_past_the_bound_close_their_connection_after_each_call(private_redis, monkeypatch):
    monkeypatch.setattr(async_enqueue, "MAX_LOOPS", 2)
    record.enqueue("warm up")
    before = clients_of_this_process(private_redis)
    loops = [asyncio.new_event_loop() for _ in range(4)]
    try:
        for loop in loops:  # left open: each keeps its place until it shuts down
            assert loop.run_until_complete(record.aenqueue("open loop")).status == "queued"
        assert list(async_enqueue._loops) == loops[:2]
        assert clients_of_this_process(private_redis) - before == 2
    finally:
        for loop in loops:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
    assert clients_of_this_process(private_redis) == before
    assert list(async_enqueue._loops) == []


def test_a_loop_closed_without_shutting_down_has_its_connections_ended_by_the_next(
    private_redis,
):
    """A bare ``loop.close()`` (no ``shutdown_asyncgens``): nothing tells of it, so the
    next loop's first call ends its connections (their transports can no longer
    be closed: their sockets are shut down), without waiting for the collector."""
    record.enqueue("warm up")
    before = clients_of_this_process(private_redis)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(record.aenqueue("closed bluntly"))
    loop.close()  # its async generators not closed: the closer never ran
    assert list(async_enqueue._loops) == [loop]
    assert clients_of_this_process(private_redis) == before + 1
    gc.disable()  # what the garbage collector would close must not hide a leak
    try:
        with warnings.catch_warnings():  # the socket itself is the collector's
            warnings.simplefilter("ignore", ResourceWarning)
            handle, hops = run(lambda: record.aenqueue("next loop"))
            assert (handle.status, hops) == ("queued", 0)
            assert list(async_enqueue._loops) == []
            poll(lambda: clients_of_this_process(private_redis) == before)
            del loop
            gc.collect()
    finally:
        gc.enable()


@pytest.mark.django_db(transaction=True)
def test_the_call_after_a_loop_blocked_past_the_socket_timeout_is_stored_and_queued(
    private_redis, settings, monkeypatch
):
    """The reply came while the loop was blocked past the deadline: the next call on
    that connection is answered as any other (not reported pending, nor put in
    the outbox, after its script ran)."""
    from tests.test_aenqueue_cancel import eventually  # which imports this module

    monkeypatch.setattr(async_enqueue, "client_settings", functools.partial(client_settings, 0.2))
    monkeypatch.setattr(async_enqueue, "_factories", weakref.WeakKeyDictionary())
    proxy = StallingProxy(private_redis.port)
    try:
        with override_settings(JOBS={**settings.JOBS, "REDIS_URL": proxy.url}):
            record.enqueue("warm up")

            async def blocked_then_next() -> tuple[Any, Any]:
                await record.aenqueue("first")
                proxy.hold_replies(0)
                calling = asyncio.create_task(record.aenqueue("blocked"))
                await eventually(lambda: proxy.held_replies)
                proxy.flow()
                time.sleep(0.5)  # blocks the loop: the reply comes, the deadline passes
                return await calling, await record.aenqueue("next")

            (blocked, after), _ = run(blocked_then_next)
    finally:
        proxy.close()
    assert (blocked.status, after.status) == ("queued", "queued")
    assert get_broker().counts("default").waiting == 4
    assert not OutboxEntry.objects.exists()
