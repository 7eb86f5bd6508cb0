"""``runjobs`` says clearly, once, what keeps it from running jobs: it stops when
that cannot heal by itself (migrations), and keeps trying when it can (Redis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.helpers import poll
from tests.services import RedisServer
from tests.testapp import jobs

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_runjobs_refuses_to_start_on_an_unmigrated_database(worker_processes):
    empty = Path(tempfile.mkdtemp()) / "unmigrated.sqlite3"
    process = worker_processes.start(
        "--burst", DJANGO_JOBS_TEST_DB="sqlite", DJANGO_JOBS_TEST_DB_NAME=str(empty)
    )
    output = worker_processes.wait(process, timeout=60)
    assert process.returncode != 0
    assert "runjobs cannot start: migrations are not applied" in output
    assert "no such table" not in output


def test_runjobs_says_once_that_redis_is_away_then_serves_when_it_comes(settings, worker_processes):
    server = RedisServer()  # its port, not started yet
    url = server.url
    worker = worker_processes.start(
        "--queues", "default", "--no-scheduler", REDIS_URL=url, DJANGO_JOBS_TEST_LEASE="0.6"
    )
    log = worker_processes.logs[worker.pid]
    poll(lambda: "Redis cannot be reached or refuses writes" in log.read_text(), timeout=30)
    server.start()
    try:
        settings.JOBS = {**settings.JOBS, "REDIS_URL": url}
        handle = jobs.record.enqueue("after-redis-came")
        poll(
            lambda: handle.refresh().status == "succeeded",
            timeout=30,
            describe=worker_processes.output,
        )
        text = log.read_text()
        assert text.count("Redis cannot be reached or refuses writes") == 1
        assert text.count("fetching from Redis failed") <= 1
        assert text.count("lease keeper cannot reach Redis") <= 1
    finally:
        worker.terminate()
        worker_processes.wait(worker, timeout=30)
        server.cleanup()
