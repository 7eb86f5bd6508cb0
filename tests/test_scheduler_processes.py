"""Schedulers as real processes on real Redis: three of them racing over many tick
boundaries enqueue each tick exactly once; runjobs embeds one unless told not to."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from django_jobs.broker.connection import get_broker
from django_jobs.handle import JobHandle
from django_jobs.models import Schedule
from tests.helpers import poll
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RECORD = "tests.testapp.jobs.record"
VIRTUAL_START = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
SPEED = 60  # a virtual minute per real second


def ticks(every: timedelta, until: datetime) -> list[datetime]:
    found, tick = [], VIRTUAL_START + every
    while tick <= until:
        found.append(tick)
        tick += every
    return found


def test_three_scheduler_processes_enqueue_each_tick_exactly_once(worker_processes):
    # catch_up="all" so that a tick that came due while no process was free is still
    # owed: every tick must then be enqueued, and only once.
    common = {"job": RECORD, "active_since": VIRTUAL_START, "catch_up": "all"}
    common["catch_up_limit"] = 1000
    Schedule.objects.create(name="every-minute", cron="* * * * *", **common)
    # croniter's optional sixth field is seconds.
    Schedule.objects.create(name="every-10s", cron="* * * * * */10", queue="other", **common)
    last_tick = VIRTUAL_START + timedelta(minutes=6)
    expected = {
        ("every-minute", "default"): ticks(timedelta(minutes=1), last_tick),
        ("every-10s", "other"): ticks(timedelta(seconds=10), last_tick),
    }
    clock = [
        f"--start={VIRTUAL_START.isoformat()}",
        f"--real-start={time.time() + 2}",  # virtual time starts once all are up
        f"--speed={SPEED}",
        f"--until={last_tick.isoformat()}",
    ]
    processes = [worker_processes.manage("run_test_scheduler", *clock) for _ in range(3)]
    outputs = [worker_processes.wait(process, timeout=60) for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output

    broker = get_broker()
    claims_found = 0
    for (name, queue), schedule_ticks in expected.items():
        k = broker.keys(queue)
        claimed = {  # tick (ms) -> the one job enqueued for it
            int(key.rsplit(":", 1)[1]): broker.client.get(key)
            for key in broker.client.scan_iter(match=k.tick_claim(name, 0)[:-1] + "*")
        }
        missing = [t for t in schedule_ticks if int(t.timestamp() * 1000) not in claimed]
        assert not missing, "\n".join([f"{name}: never enqueued {missing}", *outputs])
        assert len(set(claimed.values())) == len(claimed)
        # Exactly the claimed jobs are waiting: no tick has a second job.
        assert set(broker.client.lrange(k.waiting, 0, -1)) == set(claimed.values())
        assert Schedule.objects.get(name=name).last_run_at >= schedule_ticks[-1]
        claims_found += len(claimed)
    enqueued_lines = sum(output.count(": enqueued job ") for output in outputs)
    assert enqueued_lines == claims_found, "\n".join(outputs)


def add_every_second_schedule() -> Schedule:
    """A schedule whose job leaves Effect(key="tick") each second, from now on."""
    return Schedule.objects.create(
        name="every-second", job=RECORD, cron="* * * * * *", args=["tick"]
    )


def stop(worker_processes, process) -> str:
    process.send_signal(signal.SIGTERM)
    output = worker_processes.wait(process, timeout=30)
    assert process.returncode == 0, output
    return output


def test_runjobs_runs_the_scheduler_and_the_ticks_jobs(worker_processes):
    add_every_second_schedule()
    process = worker_processes.start("--concurrency", "2")
    poll(lambda: Effect.objects.filter(key="tick").exists(), timeout=30)
    output = stop(worker_processes, process)
    assert "scheduler started" in output
    row = Schedule.objects.get()
    assert JobHandle(row.last_job_id, "default").refresh().name == RECORD


def test_runjobs_with_no_scheduler_enqueues_no_ticks(worker_processes, redis_client, jobs_prefix):
    add_every_second_schedule()
    process = worker_processes.start("--no-scheduler")
    handle = jobs.record.enqueue("plain")
    poll(lambda: handle.refresh().status == "succeeded", timeout=30)
    output = stop(worker_processes, process)
    assert "scheduler started" not in output
    assert redis_client.keys(f"{{{jobs_prefix}:*}}:tick:*") == []
    assert not Effect.objects.filter(key="tick").exists()
