"""An ``aenqueue`` cancelled while one of its thread hops waits for a free thread
(the loop's default executor busy): asgiref drops a hop not yet started, so the
hops that announce a stored job or keep it in the outbox run to the end
whatever becomes of their caller."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from django_jobs.broker.connection import get_broker
from django_jobs.models import OutboxEntry
from tests.test_aenqueue import Heard, no_listeners  # noqa: F401 (an autouse fixture)
from tests.test_aenqueue_cancel import eventually
from tests.testapp.jobs import record


class OneThread(ThreadPoolExecutor):
    """The loop's default executor, one thread, counting what is handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def cancelled_in_its_hop(before_the_call: Callable[[], None] = lambda: None) -> None:
    """An ``aenqueue`` cancelled once its next hop waits behind a busy thread."""
    executor = OneThread()
    gate = threading.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(executor)
        await record.aenqueue("first")  # the loop's connection, the queue registered
        busy = loop.run_in_executor(None, gate.wait)  # the executor's one thread
        queued = executor.submitted + 1
        before_the_call()
        call = asyncio.create_task(record.aenqueue("cancelled in its hop"))
        await eventually(lambda: executor.submitted == queued)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        gate.set()
        await busy

    try:
        asyncio.run(main())  # waits for its default executor's work
    finally:
        gate.set()
        executor.shutdown()


def test_a_stored_job_whose_caller_was_cancelled_in_its_event_hop_is_announced(private_redis):
    record.enqueue("warm up")
    with Heard() as heard:
        cancelled_in_its_hop()
    announced = [d["job_id"] for _, d, stored, _ in heard.events if stored]
    assert [get_broker().get_job("default", job_id)["args"] for job_id in announced] == [
        '["first"]',
        '["cancelled in its hop"]',
    ]


@pytest.mark.django_db(transaction=True)
def test_a_job_whose_caller_was_cancelled_in_its_outbox_hop_is_kept(private_redis):
    record.enqueue("warm up")
    try:
        cancelled_in_its_hop(private_redis.stop)  # Redis down: the outbox keeps it
    finally:
        private_redis.start()
    (kept,) = OutboxEntry.objects.all()
    assert kept.job["args_json"] == '["cancelled in its hop"]'
