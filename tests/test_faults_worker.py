"""Never lose a job: real worker processes killed with -9 or stopped with SIGTERM."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
from django.conf import settings

from django_jobs.broker.connection import get_broker
from django_jobs.handle import JobHandle
from django_jobs.models import DeadLetter
from tests.helpers import poll
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LEASE = "1"  # seconds; a killed worker's jobs come back within about 1.3 s


def totals() -> dict[str, int]:
    return get_broker().counts("default").totals


def outcomes(handle: JobHandle) -> list[str]:
    return [entry["outcome"] for entry in handle.refresh().history]


def test_kill_9_mid_job_under_load_loses_nothing(private_redis, worker_processes, figures):
    count, failing, kills = 1000, 20, 5
    handles = jobs.works_then_records.enqueue_many([(f"k{i}", 0.004) for i in range(count)])
    doomed = jobs.always_fails.enqueue_many([(f"f{i}",) for i in range(failing)])
    start = lambda: worker_processes.start(  # noqa: E731
        "--queues", "default", "--concurrency", "4", DJANGO_JOBS_TEST_LEASE=LEASE
    )
    workers = [start() for _ in range(3)]
    killed_at: dict[int, float] = {}
    rng = random.Random(7)
    for kill in range(kills):
        target = (kill + 1) * count // (kills + 2)
        poll(lambda t=target: totals().get("succeeded", 0) >= t, timeout=120)
        victim = rng.choice([w for w in workers if w.poll() is None])
        os.kill(victim.pid, signal.SIGKILL)
        killed_at[victim.pid] = time.time()
        workers.remove(victim)
        workers.append(start())

    poll(
        lambda: totals().get("succeeded", 0) >= count and DeadLetter.objects.count() >= failing,
        timeout=180,
    )
    histories = [outcomes(handle) for handle in handles]
    lost = sum(1 for h in handles if h.status != "succeeded")
    duplicated_successes = sum(1 for history in histories if history.count("succeeded") != 1)
    taken_back = [
        entry
        for handle in handles + doomed
        for entry in handle.history
        if entry["outcome"] == "lost"
    ]
    recovery = [
        entry["finished_at"] / 1000 - killed_at[int(entry["worker"].split(":")[1])]
        for entry in taken_back
    ]
    runs = Effect.objects.filter(key__startswith="k").count()
    figures.append(
        f"kill -9: {count} jobs + {failing} failing, {kills} kills, lost {lost}, "
        f"duplicated successes {duplicated_successes}, taken back {len(taken_back)}, "
        f"extra runs {runs - count}, recovery {min(recovery, default=0):.2f}-"
        f"{max(recovery, default=0):.2f}s after the kill (lease {LEASE}s)"
    )
    assert lost == 0
    assert duplicated_successes == 0
    assert Effect.objects.filter(key__startswith="k").values("key").distinct().count() == count
    assert len(taken_back) >= 1  # the kills did hit running jobs
    assert {d.refresh().status for d in doomed} == {"dead"}
    assert DeadLetter.objects.count() == failing
    assert get_broker().counts("default").running <= 12  # only the live workers' jobs


@pytest.mark.redis_only
def test_sigterm_with_a_long_grace_lets_the_job_finish(worker_processes):
    handle = jobs.says_started_then_records.enqueue("finishes", 1.0)
    process = worker_processes.start("--grace", "30")
    poll(lambda: handle.refresh().progress, timeout=30)
    process.send_signal(signal.SIGTERM)
    output = worker_processes.wait(process, timeout=60)
    assert process.returncode == 0, output
    assert handle.refresh().status == "succeeded"
    assert outcomes(handle) == ["succeeded"]


@pytest.mark.redis_only
def test_sigterm_with_a_short_grace_gives_the_job_back_without_an_attempt(worker_processes):
    handle = jobs.says_started_then_records.enqueue("given-back", 5.0)
    process = worker_processes.start("--grace", "0.2", DJANGO_JOBS_TEST_LEASE=LEASE)
    poll(lambda: handle.refresh().progress, timeout=30)
    process.send_signal(signal.SIGTERM)
    output = worker_processes.wait(process, timeout=60)
    assert process.returncode == 0, output
    assert "gave back job" in output
    handle.refresh()
    # Its thread still ran it: back for a lease from now, not at once (see draining.py).
    assert (handle.status, handle.attempts, outcomes(handle)) == ("retrying", 0, ["released"])
    finisher = worker_processes.start()
    poll(lambda: handle.refresh().status == "succeeded", timeout=60)
    finisher.send_signal(signal.SIGTERM)
    worker_processes.wait(finisher, timeout=60)
    assert outcomes(handle) == ["released", "succeeded"]
    assert Effect.objects.filter(key="given-back").count() == 1


def stop_while_another_waits(worker_processes, client, record: str, *options: str):
    """Start a worker (``options``, a 0.2 s grace) on the job that writes to ``record``,
    once it runs start a second, idle one, then SIGTERM the first and wait for it to
    end; the second worker and the first one's output."""
    first = worker_processes.start(*options, "--grace", "0.2", DJANGO_JOBS_TEST_LEASE=LEASE)
    poll(lambda: client.llen(record) > 0, timeout=30)
    second = worker_processes.start(DJANGO_JOBS_TEST_LEASE=LEASE)
    poll(lambda: "serving queues" in worker_processes.logs[second.pid].read_text(), timeout=30)
    first.send_signal(signal.SIGTERM)
    output = worker_processes.wait(first, timeout=60)
    assert first.returncode == 0, output
    return second, output


@pytest.mark.redis_only
@pytest.mark.parametrize("processes", [[], ["--processes", "1"]], ids=["threads", "processes"])
def test_a_job_still_running_when_the_grace_ends_never_runs_twice_at_once(
    worker_processes, processes
):
    """The job ignores the shutdown: its thread runs on after the grace period. It is
    given back, and the other worker, idle and waiting, must not start it while that
    thread still runs (its process must be gone first). A lone worker gives it back
    for a lease later and ends at once; a supervised one leaves it to its supervisor,
    which gives it back once the process is gone."""
    record = f"{settings.JOBS['PREFIX']}:test:runs:ignores-shutdown"
    client = jobs.test_redis()
    client.delete(record)
    handle = jobs.ignores_shutdown.enqueue(record, 3.0)
    second, output = stop_while_another_waits(worker_processes, client, record, *processes)
    if processes:
        assert "running at shutdown; the supervisor gives it back" in output, output
        assert "now that the process is gone" in output, output
    else:
        assert "it may start again in 1s" in output, output
    poll(lambda: handle.refresh().status == "succeeded", timeout=60)
    second.send_signal(signal.SIGTERM)
    worker_processes.wait(second, timeout=60)
    events = [entry.decode().split(" ") for entry in client.lrange(record, 0, -1)]
    starts = [index for index, (kind, _) in enumerate(events) if kind == "start"]
    assert len(starts) == 2, events[:3]
    first_run = events[0][1]
    last_of_first = max(i for i, (_, run) in enumerate(events) if run == first_run)
    assert last_of_first < starts[1], "the job started again while its first run went on"
    assert (handle.attempts, outcomes(handle)) == (1, ["released", "succeeded"])


@pytest.mark.redis_only
def test_a_supervised_process_frozen_after_its_stop_never_has_its_job_run_twice_at_once(
    worker_processes,
):
    """A process given no CPU for longer than a lease as it stops (here its job freezes
    it, C code holding the GIL, once given back or once its worker has left the
    registry) still runs the job it left behind when it gets the CPU back. Its
    give-back must not become effective meanwhile: with --processes the supervisor
    gives the job back only once the process is gone, however long that takes. The
    second run says ("overlaps") if the first run's process still existed. A process
    frozen for good is killed a lease after it said it was leaving."""
    record = f"{settings.JOBS['PREFIX']}:test:runs:frozen"
    client = jobs.test_redis()
    client.delete(record)
    handle = jobs.freezes_its_process_as_its_worker_stops.enqueue(record, 30)
    second, output = stop_while_another_waits(worker_processes, client, record, "--processes", "1")
    # Frozen for 30 s, it would hold its job for ever; a lease after it said it was
    # leaving, the supervisor kills it, then gives the job back.
    assert "is still there 1s later; killing it" in output, output
    poll(lambda: handle.refresh().status == "succeeded", timeout=60)
    second.send_signal(signal.SIGTERM)
    worker_processes.wait(second, timeout=60)
    events = [entry.decode().split(" ") for entry in client.lrange(record, 0, -1)]
    assert [kind for kind, _ in events] == ["start", "start"], events
    assert (handle.attempts, outcomes(handle)) == (1, ["released", "succeeded"])


@pytest.mark.redis_only
def test_a_second_signal_stops_at_once_and_still_loses_nothing(worker_processes):
    handle = jobs.says_started_then_records.enqueue("interrupted", 30.0)
    process = worker_processes.start("--grace", "60")
    # Its progress, not its status: "running" is set when the job is leased, before a
    # thread starts it, and a job not yet started is given back at once (as "queued").
    poll(lambda: handle.refresh().progress, timeout=30)
    process.send_signal(signal.SIGTERM)
    poll(lambda: handle.refresh().status == "running")  # still finishing in its grace
    process.send_signal(signal.SIGINT)
    output = worker_processes.wait(process, timeout=30)
    assert process.returncode == 0, output
    assert "stopping now" in output
    handle.refresh()
    assert (handle.status, handle.attempts) == ("retrying", 0)  # its thread still ran it


@pytest.mark.redis_only
def test_sigterm_gives_back_prefetched_jobs_at_once_and_finishes_the_running_one(
    worker_processes,
):
    running = jobs.says_started_then_records.enqueue("runs", 1.0)
    waiting = [jobs.works_then_records.enqueue(f"prefetched-{n}", 0) for n in range(3)]
    process = worker_processes.start("--concurrency", "1", "--prefetch", "4", "--grace", "30")
    poll(lambda: running.refresh().progress, timeout=30)
    assert all(h.refresh().status == "running" for h in waiting)  # leased ahead
    process.send_signal(signal.SIGTERM)
    output = worker_processes.wait(process, timeout=60)
    assert process.returncode == 0, output
    assert outcomes(running) == ["succeeded"]
    for handle in waiting:
        handle.refresh()
        assert (handle.status, handle.attempts, outcomes(handle)) == ("queued", 0, ["released"])
    assert not Effect.objects.filter(key__startswith="prefetched").exists()


@pytest.mark.redis_only
def test_a_hanging_redis_never_keeps_a_stopping_worker_past_its_give_back_window(
    private_redis, worker_processes, figures
):
    """Jobs still running when the grace ends are given back for later: startable a
    lease after the give-back reaches Redis, by when their process must be gone (it
    ends at once, taking their threads with it). Against a Redis that hangs, each
    give-back used to wait out its own socket timeout, one after the other, and the
    process lived on past that window. Now they go in one round trip waited for a
    bounded time, and what could not be given back is logged (leases bring it back)."""
    lease, grace = 4.0, 0.2
    record = f"{settings.JOBS['PREFIX']}:test:runs:hanging-redis"
    client = jobs.test_redis()
    handles = [jobs.ignores_shutdown.enqueue(f"{record}:{n}", 5.0) for n in range(3)]
    process = worker_processes.start(
        "--concurrency", "3", "--grace", str(grace), DJANGO_JOBS_TEST_LEASE=f"{lease:g}"
    )
    poll(lambda: all(client.llen(f"{record}:{n}") for n in range(3)), timeout=30)
    os.kill(private_redis.process.pid, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output = worker_processes.wait(process, timeout=60)
        took = time.monotonic() - stopped_at
    finally:
        os.kill(private_redis.process.pid, signal.SIGCONT)
    figures.append(
        f"stop against a hanging Redis: gone {took:.2f}s after SIGTERM "
        f"(grace {grace:g}s, lease {lease:g}s)"
    )
    assert process.returncode == 0, output
    # Gone before any job it gave back for later may start elsewhere.
    assert took < grace + lease, output
    for handle in handles:
        assert f"could not give back job {handle.id}" in output, output
    finisher = worker_processes.start("--concurrency", "3", DJANGO_JOBS_TEST_LEASE=f"{lease:g}")
    poll(lambda: all(h.refresh().status == "succeeded" for h in handles), timeout=60)
    finisher.send_signal(signal.SIGTERM)
    worker_processes.wait(finisher, timeout=60)
