"""A stop with a short lease on a busy worker: the give-back's wait (give_back_wait)
is long enough for the round trip while CPU-bound jobs hold the GIL, and short
enough to stay inside the lease."""

from __future__ import annotations

import signal
import time

import pytest
from django.conf import settings

from django_jobs.worker.draining import EXIT_SHARE, GIVE_BACK_FLOOR_SECONDS, give_back_wait
from tests.helpers import poll
from tests.testapp import jobs


@pytest.mark.parametrize("lease", [0.5, 1, 3, 4, 6, 9, 30])
def test_the_give_back_waits_at_least_its_floor_or_half_a_lease_and_ends_inside_it(lease):
    wait = give_back_wait(lease)
    assert wait >= min(GIVE_BACK_FLOOR_SECONDS, lease / 2)
    assert wait >= lease / 3
    # A job given back at the grace's end was renewed at most a third of a lease
    # before; the exit deadline after the last give-back is EXIT_SHARE of a lease.
    assert wait <= lease / 2 < lease * EXIT_SHARE


@pytest.mark.slow
@pytest.mark.redis_only
@pytest.mark.django_db(transaction=True)
def test_with_a_3s_lease_and_cpu_bound_jobs_prefetched_jobs_are_given_back_at_once(
    private_redis, worker_processes, figures
):
    """Given back in time, they are queued again the moment the worker is gone; given
    up on (and the process gone before the call went out), they would wait a lease
    for it to expire, and lose an attempt."""
    lease, grace, threads = 3.0, 0.1, 4
    record = f"{settings.JOBS['PREFIX']}:test:runs:short-lease"
    client = jobs.test_redis()
    running = [jobs.computes.enqueue(record, 30.0) for _ in range(threads)]
    prefetched = jobs.works_then_records.enqueue_many([(f"p{n}", 0) for n in range(32)])
    process = worker_processes.start(
        "--concurrency", str(threads), "--prefetch", "32", "--grace", f"{grace:g}",
        DJANGO_JOBS_TEST_LEASE=f"{lease:g}",
    )  # fmt: skip
    poll(lambda: client.llen(record) >= threads, timeout=30)
    assert all(handle.refresh().status == "running" for handle in prefetched)  # leased ahead
    stopped_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output = worker_processes.wait(process, timeout=30)
    took = time.monotonic() - stopped_at
    statuses = [handle.refresh().status for handle in prefetched]
    figures.append(
        f"stop with a {lease:g}s lease, {threads} CPU-bound jobs, 32 prefetched: gone "
        f"{took:.2f}s after SIGTERM (give-back waits {give_back_wait(lease):g}s), "
        f"{output.count('could not give back')} give-back(s) reported late"
    )
    assert process.returncode == 0, output
    assert statuses == ["queued"] * len(prefetched), output
    for handle in prefetched:
        assert (handle.attempts, [entry["outcome"] for entry in handle.history]) == (
            0,
            ["released"],
        )
    for handle in running:
        handle.refresh()
        assert (handle.status, handle.attempts) == ("retrying", 0)
