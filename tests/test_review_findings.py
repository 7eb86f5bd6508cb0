"""Holes found by the adversarial review of flow control, dedupe, the outbox and
the supervisor: each test shows one (it failed before its fix)."""

from __future__ import annotations

import pytest

from django_jobs import events
from django_jobs.broker.connection import get_broker
from tests.helpers import poll, serving
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_job_rate_limited_with_no_hold_and_fetched_again_at_once_runs_once_more():
    """RateLimited(retry_after=0) puts the job back with its attempt count unchanged,
    so the same worker can lease it again under the same (id, attempt) before the
    first run's bookkeeping is done. That bookkeeping must not drop the new lease:
    dropped, the job sat leased and unrun until its lease expired, then counted as
    a lost worker (an attempt used; dead on the last one)."""
    broker = get_broker()
    serving_worker, raced = [], []

    def taken_again_before_done(event, **data):
        # The first run ended (released); hold this thread back, before the worker
        # settles that run, until its fetch loop has leased and taken the job again.
        if event == "ended" and data["outcome"] == "rate_limited":
            poll(lambda: serving_worker[0].processed == 2, timeout=5)
            raced.append(True)

    events.subscribe(taken_again_before_done)
    try:
        # One thread and one prefetched job: the new lease waits for the thread that
        # is still settling the first run.
        with serving(concurrency=1, prefetch=1) as worker:
            serving_worker.append(worker)
            handle = jobs.answers_429_once.enqueue("again", 0)
            poll(
                lambda: handle.refresh().status == "succeeded",
                timeout=10,
                describe=lambda: broker.get_job("default", handle.id),
            )
    finally:
        events.unsubscribe(taken_again_before_done)
    assert raced  # the race this test is about did happen
    data = broker.get_job("default", handle.id)
    assert "stalls" not in data and '"outcome":"lost"' not in data["history"]


def test_a_rate_loosened_in_the_settings_applies_at_once():
    """A rate's state is the next start's time, computed with the interval of the
    rate in force when it was taken. Loosened in the settings ("1/h", a typo, fixed
    to "100/s"), the old state held the queue for up to an hour."""
    from django_jobs.limits import FetchLimits, Limits, parse_rate

    def rate(text):
        return FetchLimits(queue=Limits(rate=parse_rate(text, "test")))

    jobs.record.enqueue_many([(f"r{n}",) for n in range(3)])
    broker = get_broker()
    assert len(broker.fetch("default", "w1", 30_000, 10, rate("1/h")).jobs) == 1
    assert broker.fetch("default", "w1", 30_000, 10, rate("1/h")).jobs == []
    # Within one interval of the new rate (10 ms), not an hour.
    after = broker.fetch("default", "w1", 30_000, 10, rate("100/s"))
    assert after.jobs or after.next_due_ms - after.now_ms <= 10
    poll(lambda: broker.fetch("default", "w1", 30_000, 10, rate("100/s")).jobs, timeout=10)


@pytest.mark.parametrize("garbage", ["nan", "inf", "1e300"])
def test_garbage_in_a_rate_key_does_not_hold_the_queue(redis_client, garbage):
    from django_jobs.limits import FetchLimits, Limits, parse_rate

    jobs.record.enqueue("r")
    broker = get_broker()
    redis_client.set(broker.keys("default").rate, garbage)
    limits = FetchLimits(queue=Limits(rate=parse_rate("100/s", "test")))
    poll(lambda: broker.fetch("default", "w1", 30_000, 10, limits).jobs, timeout=10)


@pytest.mark.parametrize("big", ["x" * 1000, {"nested": ["x" * 1000]}], ids=["text", "nested"])
def test_a_batch_with_one_payload_over_the_limit_stores_none_of_it(settings, big):
    """enqueue_many checks every call before it writes any (all or nothing); the
    size was checked as the jobs were built, while earlier chunks were already on
    their way to Redis: the caller got PayloadTooLarge and 100 jobs ran anyway."""
    from django_jobs.exceptions import PayloadTooLarge

    settings.JOBS = {**settings.JOBS, "MAX_PAYLOAD_BYTES": 1000}
    calls = [("y" * 900,) for n in range(150)] + [(big,)]
    with pytest.raises(PayloadTooLarge):
        jobs.record.enqueue_many(calls)
    assert get_broker().counts("default").waiting == 0
    assert len(jobs.record.enqueue_many(calls[:-1])) == 150  # near the limit: all stored


def test_a_running_job_asked_to_cancel_whose_worker_is_lost_ends_cancelled():
    """An operator cancels a job whose worker hangs, then the worker is killed: the
    job is taken back and run again from the start, the one thing asked not to."""
    broker = get_broker()
    handle = jobs.record.enqueue("hung")
    broker.fetch("default", "hung-worker", lease_ms=1, count=1)
    assert handle.cancel() == "running"  # asked to stop

    def taken_back() -> bool:
        broker.recover("default")
        return handle.refresh().status != "running"

    poll(taken_back)
    assert handle.status == "cancelled"
    assert broker.fetch("default", "other-worker", lease_ms=30_000, count=1).jobs == []


def test_requeue_dead_goes_on_past_a_letter_it_cannot_requeue():
    """One dead letter whose arguments cannot be requeued (not a JSON list) stopped
    `jobs requeue-dead` there: the letters after it stayed dead, and with --json
    nothing said which had been requeued before it."""
    import io
    import json

    from django.core.management import call_command
    from django.core.management.base import CommandError

    from django_jobs.models import DeadLetter
    from tests.helpers import run_burst

    jobs.fails_permanently.enqueue("bad")
    jobs.fails_permanently.enqueue("good")
    run_burst()
    bad, good = DeadLetter.objects.order_by("failed_at", "id")
    DeadLetter.objects.filter(pk=bad.pk).update(args={"not": "a list"})
    out = io.StringIO()
    with pytest.raises(CommandError, match=bad.job_id):
        call_command("jobs", "requeue-dead", "--json", stdout=out, stderr=io.StringIO())
    good.refresh_from_db()
    assert good.status == "requeued"
    assert DeadLetter.objects.get(pk=bad.pk).status == "dead"
    said = json.loads(out.getvalue())
    assert list(said["requeued"]) == [good.job_id] and list(said["refused"]) == [bad.job_id]


def test_the_supervisor_forgets_a_runs_time_limit_when_its_key_is_leased_again():
    """A job given back by RateLimited keeps its attempt number, so the same child may
    lease it again under the same attempt (now with a new lease number). The first
    run's time limit must not stay with the new lease: waiting behind other jobs past
    that old deadline, the new lease looked stuck and the supervisor killed the
    child (and failed the attempt of a run that had not even started)."""
    from django_jobs.worker.supervisor_link import ChildJobs

    jobs_of_child = ChildJobs()
    # h <queue> <id> <lease> <attempt>; t <id> <lease> <deadline> <seconds>
    jobs_of_child.feed(b"w\tw1\nh\tdefault\ta\t4\t1\nt\ta\t4\t100.0\t5.0\n")
    assert jobs_of_child.limits == {("a", 4): (100.0, 5.0)}
    jobs_of_child.feed(b"h\tdefault\ta\t5\t1\n")  # given back, then leased again
    jobs_of_child.feed(b"r\ta\t4\n")  # ... and the first run's end reported late
    assert jobs_of_child.limits == {} and jobs_of_child.held == {("a", 5): ("default", 1)}


def test_prefetched_jobs_of_a_paused_queue_do_not_start():
    """A paused queue starts none of its jobs within a second (DESIGN, Flow control).
    Jobs a worker had already leased ahead (--prefetch) started all the same when a
    thread came free, however long after the pause."""
    from django_jobs import pause_queue, resume_queue
    from tests.testapp.models import Effect

    broker = get_broker()
    jobs.RELEASE_BLOCKED.clear()
    blocker = jobs.waits_for_release.enqueue()
    ahead = [jobs.record.enqueue(f"ahead-{n}") for n in range(2)]
    try:
        with serving(concurrency=1, prefetch=2):
            poll(lambda: blocker.refresh().status == "running")
            poll(lambda: all(h.refresh().status == "running" for h in ahead))  # leased ahead
            leased_at = int(broker.get_job("default", ahead[1].id)["started_at"])
            poll(lambda: broker.server_time_ms() - leased_at > 1000)  # waiting over a second
            pause_queue("default")
            jobs.RELEASE_BLOCKED.set()
            poll(lambda: blocker.refresh().status == "succeeded")
            # Given back (no attempt used), not run.
            poll(lambda: all(h.refresh().status == "queued" for h in ahead))
            assert not Effect.objects.filter(key__startswith="ahead").exists()
            assert all(broker.get_job("default", h.id).get("attempt", "0") == "0" for h in ahead)
            resume_queue("default")
            poll(lambda: all(h.refresh().status == "succeeded" for h in ahead))
    finally:
        jobs.RELEASE_BLOCKED.set()


def test_purge_with_no_one_to_answer_says_so(monkeypatch):
    """`jobs purge QUEUE` from a script (stdin closed, no --yes) ended in an EOFError
    traceback instead of a clear error."""
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    handle = jobs.record.enqueue("kept")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(CommandError, match="--yes"):
        call_command("jobs", "purge", "default", stdout=io.StringIO())
    assert handle.refresh().status == "queued"
