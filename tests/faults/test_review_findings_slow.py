"""Slow holes found by the adversarial review (each failed before its fix)."""

from __future__ import annotations

import pytest
import redis

from tests.services import free_port

# redis_only: its process uses a PostgreSQL of its own (unreachable), whatever the
# suite's database is.
pytestmark = [pytest.mark.slow, pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]

# In a process of its own, whose database (PostgreSQL on a port with nothing
# behind it) is unreachable: enqueue once while Redis answers, then stop Redis
# (SIGSTOP) so the next enqueue's script is sent but its reply never comes.
ENQUEUE_INTO_A_HUNG_REDIS = """
import os, signal
from django_jobs.exceptions import EnqueueFailed
from tests.testapp import jobs
jobs.record.enqueue('first')
os.kill(int(os.environ['REDIS_PID']), signal.SIGSTOP)
try:
    jobs.record.enqueue('second')
except EnqueueFailed as error:
    print('RAISED', error.job_ids, error)
finally:
    os.kill(int(os.environ['REDIS_PID']), signal.SIGCONT)
"""


def test_an_enqueue_whose_reply_never_came_does_not_say_nothing_was_stored(
    private_redis, worker_processes
):
    """Redis took the script and then hung; the database was down too. The error
    said "Nothing was stored; enqueue again": the job ran once Redis woke, and the
    caller, told to enqueue again, ran it twice."""
    process = worker_processes.manage(
        "shell",
        "-c",
        ENQUEUE_INTO_A_HUNG_REDIS,
        REDIS_URL=private_redis.url,
        REDIS_PID=str(private_redis.process.pid),
        DJANGO_JOBS_TEST_DB="postgres",
        PGPORT=str(free_port()),
    )
    output = worker_processes.wait(process, timeout=90)
    assert "RAISED" in output, output
    assert "Nothing was stored" not in output
    assert "may have stored" in output
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    stored = [key for key in client.scan_iter("*:job:*")]
    assert len(stored) == 2  # the second was stored after all, as the error allowed
    assert stored[0].rsplit(":", 1)[1] in output or stored[1].rsplit(":", 1)[1] in output
