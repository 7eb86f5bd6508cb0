"""Signals for integrations, sent from a real worker where each event happens."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from django_jobs import events, signals
from django_jobs.broker.connection import get_broker
from django_jobs.worker.announcements import Announcements
from django_jobs.worker.leases import LeaseKeeper
from tests.helpers import poll, run_burst
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def receiving(*names: str):
    """Receivers that record each signal as an Effect row (in the database, as an
    integration would), connected for the block only."""

    def receiver_for(name):
        def receive(sender, **kwargs):
            extra = "retry" if kwargs.get("will_retry") else ""
            Effect.objects.create(
                key=f"{name}:{sender}:{extra}", attempt=kwargs.get("attempt") or 0
            )

        return receive

    connected = [(getattr(signals, name), receiver_for(name)) for name in names]
    for signal, receiver in connected:
        signal.connect(receiver, weak=False)
    try:
        yield
    finally:
        for signal, receiver in connected:
            signal.disconnect(receiver)


def seen() -> list[tuple[str, int | None]]:
    return sorted(Effect.objects.filter(key__contains=":").values_list("key", "attempt"))


def announcing_keeper(queue: str) -> tuple[LeaseKeeper, Announcements]:
    """A lease keeper (not started: the test calls its ``recover``) that notes the jobs
    it takes back from lost workers, as a worker's does, for ``flush`` to announce."""
    broker = get_broker()
    announcements = Announcements(broker, [queue])
    keeper = LeaseKeeper(
        *(broker, "keeper", [queue], 1000, list, {}),
        on_dead=lambda queue, job_id: None,
        on_taken_back=announcements.lost,
    )
    return keeper, announcements


def test_each_lifecycle_signal_is_sent_once_where_it_happens():
    names = ("job_enqueued", "job_started", "job_succeeded", "job_failed", "job_dead")
    with receiving(*names):
        jobs.record.enqueue("fine")
        jobs.fails_twice.enqueue("flaky")
        jobs.fails_permanently.enqueue("broken")
        run_burst()
    record, flaky, broken = jobs.record.name, jobs.fails_twice.name, jobs.fails_permanently.name
    assert seen() == sorted(
        [
            (f"job_enqueued:{record}:", 0),
            (f"job_enqueued:{flaky}:", 0),
            (f"job_enqueued:{broken}:", 0),
            (f"job_started:{record}:", 1),
            (f"job_succeeded:{record}:", 1),
            (f"job_started:{flaky}:", 1),
            (f"job_failed:{flaky}:retry", 1),
            (f"job_started:{flaky}:", 2),
            (f"job_failed:{flaky}:retry", 2),
            (f"job_started:{flaky}:", 3),
            (f"job_succeeded:{flaky}:", 3),
            (f"job_started:{broken}:", 1),
            (f"job_failed:{broken}:", 1),
            (f"job_dead:{broken}:", 1),
        ]
    )


def test_a_receiver_that_raises_breaks_neither_the_job_nor_the_enqueue():
    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    signals.job_enqueued.connect(broken)
    signals.job_succeeded.connect(broken)
    try:
        handle = jobs.record.enqueue("still")
        run_burst()
    finally:
        signals.job_enqueued.disconnect(broken)
        signals.job_succeeded.disconnect(broken)
    assert handle.refresh().status == "succeeded"
    assert signals._send not in events.listeners  # unsubscribed once every receiver is gone


def test_a_job_of_a_lost_worker_is_announced_as_failed_and_then_dead():
    broker = get_broker()
    handle = jobs.raises_unprintable.enqueue("lost")  # its one attempt is lost
    broker.fetch("default", "doomed-worker", lease_ms=1, count=1)
    announcements = Announcements(broker, ["default"])
    with receiving("job_failed", "job_dead"):
        (job_id,) = poll(lambda: broker.recover("default").dead)
        announcements.lost("default", job_id, "dead")
        announcements.flush()
    assert handle.refresh().status == "dead"
    name = jobs.raises_unprintable.name
    assert seen() == [(f"job_dead:{name}:", 1), (f"job_failed:{name}:", 1)]


def test_a_cancelled_job_of_a_lost_worker_is_announced_as_ended_cancelled():
    """recover.lua ends a job asked to cancel while its worker was lost as cancelled:
    listeners hear of it as of a cancel its own worker saw after a failure."""
    broker = get_broker()
    handle = jobs.record.enqueue("cancelled while lost")
    broker.fetch("default", "doomed-worker", lease_ms=1, count=1)
    assert handle.cancel() == "running"  # asked; its worker never sees it
    keeper, announcements = announcing_keeper("default")
    heard = []

    def listen(event, **data):
        heard.append((event, data.get("job_id"), data.get("outcome"), data.get("will_retry")))

    events.subscribe(listen)
    try:
        poll(lambda: keeper.recover() and handle.refresh().status == "cancelled")
        announcements.flush()
    finally:
        events.unsubscribe(listen)
    assert [h for h in heard if h[1] == handle.id] == [
        ("failed", handle.id, None, False),
        ("ended", handle.id, "cancelled", None),
    ]


def test_a_lost_attempt_ends_once_as_a_retry_or_a_bury_would_end_it():
    """A job taken back from a lost worker gets the events its own worker would have
    emitted: a retry's when requeued, a bury's when dead, each ending the attempt
    ("ended", which tracing and the Tasks backend listen to) once, with the attempt
    that was lost even when the job was leased again before they are emitted."""
    broker = get_broker()
    requeued = jobs.record.using(queue="lost-signals").enqueue("requeued")
    dead = jobs.raises_unprintable.using(queue="lost-signals").enqueue("dead")
    broker.fetch("lost-signals", "doomed-worker", lease_ms=1, count=2)
    keeper, announcements = announcing_keeper("lost-signals")
    heard = []

    def listen(event, **data):
        if event != "latency_exceeded":
            heard.append((event, data["job_id"], data["attempt"], data.get("outcome")))

    events.subscribe(listen)
    try:
        poll(
            lambda: (
                keeper.recover() is not None
                and (requeued.refresh().status, dead.refresh().status) == ("queued", "dead")
            )
        )
        # Leased again (attempt 2) before the housekeeper gets to announce the loss.
        assert broker.fetch("lost-signals", "next-worker", 30_000, 1).jobs[0].attempt == 2
        announcements.flush()
        announcements.flush()  # nothing twice
    finally:
        events.unsubscribe(listen)
    assert sorted(heard) == sorted(
        [
            ("failed", requeued.id, 1, None),
            ("ended", requeued.id, 1, "retrying"),
            ("failed", dead.id, 1, None),
            ("dead", dead.id, 1, None),
            ("ended", dead.id, 1, "dead"),
        ]
    )


def test_a_queue_over_its_max_latency_is_announced(settings):
    settings.JOBS = {**settings.JOBS, "QUEUES": {"default": {"max_latency": 0}}}
    received = []

    def receive(sender, queue, latency, **kwargs):
        received.append((sender, queue, latency))

    jobs.record.enqueue("waits")
    signals.queue_latency_exceeded.connect(receive)
    try:
        announcements = Announcements(get_broker(), ["default"])
        poll(lambda: announcements.flush() or received)
    finally:
        signals.queue_latency_exceeded.disconnect(receive)
    ((sender, queue, latency),) = received[:1]
    assert (sender, queue) == ("default", "default") and latency > 0
