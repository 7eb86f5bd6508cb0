"""A durable step survives its worker: kill -9 after a step's result is stored, and
the attempt that takes the job back replays the step instead of running it again."""

from __future__ import annotations

import os
import signal

import pytest

from tests.helpers import poll
from tests.testapp import jobs

pytestmark = [pytest.mark.slow, pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]

LEASE = "1"  # seconds: the killed worker's job comes back within about 1.3 s


def test_kill_9_after_a_step_is_stored_does_not_run_it_again(worker_processes):
    handle = jobs.step_then_hangs_once.enqueue("kill")
    worker = worker_processes.start("--queues", "default", DJANGO_JOBS_TEST_LEASE=LEASE)
    # The first step's result is stored; the attempt now hangs.
    poll(lambda: "first" in handle.refresh().steps, timeout=60, describe=worker_processes.output)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)

    survivor = worker_processes.start("--queues", "default", DJANGO_JOBS_TEST_LEASE=LEASE)
    poll(
        lambda: handle.refresh().status == "succeeded",
        timeout=60,
        describe=lambda: (handle.history, worker_processes.output()),
    )
    assert jobs.step_effect_count("kill:first") == (1, 1)
    assert jobs.step_effect_count("kill:second") == (1, 1)
    first, second = handle.result
    assert first["runs"] == second["runs"] == 1
    lost, succeeded = handle.history
    assert (lost["outcome"], lost["error_class"]) == ("lost", "WorkerLost")
    assert (succeeded["outcome"], succeeded["attempt"]) == ("succeeded", 2)
    assert (succeeded["steps_replayed"], succeeded["steps_ran"]) == (["first"], ["second"])
    # The lost attempt could not write its own entry; the step says where it ran.
    assert [record["attempt"] for record in handle.steps.values()] == [1, 2]
    survivor.send_signal(signal.SIGTERM)
    assert worker_processes.wait(survivor, timeout=30) is not None
