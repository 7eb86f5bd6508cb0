"""Durable steps (``context.step``): each step's effect happens once per job, across
retries and a requeued dead letter; bad steps fail clearly and store nothing."""

from __future__ import annotations

import pytest

from django_jobs import dead_letters
from django_jobs.broker.connection import get_broker
from django_jobs.exceptions import LeaseLost
from django_jobs.handle import JobHandle
from django_jobs.models import DeadLetter
from django_jobs.worker.context import JobContext
from tests.helpers import run_burst
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def step_fields(handle: JobHandle) -> dict[str, str]:
    key = get_broker().keys(handle.queue).job(handle.id)
    return {f: v for f, v in get_broker().client.hgetall(key).items() if f.startswith("step:")}


def test_a_job_retried_after_two_steps_runs_each_step_once(worker_processes):
    handle = jobs.two_steps_then_fails_once.enqueue("order")
    process = worker_processes.start("--burst", "--queues", "default")
    output = worker_processes.wait(process, timeout=60)
    assert process.returncode == 0, output

    handle.refresh()
    assert handle.status == "succeeded", handle.history
    # Counted independently, in the database and in Redis: one run each.
    assert jobs.step_effect_count("order:charge") == (1, 1)
    assert jobs.step_effect_count("order:email") == (1, 1)
    assert handle.result["charge"]["runs"] == handle.result["email"]["runs"] == 1
    first, second = handle.history
    assert (first["outcome"], first["steps_ran"]) == ("failed", ["charge", "email"])
    assert "steps_replayed" not in first
    assert (second["outcome"], second["steps_replayed"]) == ("succeeded", ["charge", "email"])
    assert "steps_ran" not in second
    assert list(handle.steps) == ["charge", "email"]
    assert {record["attempt"] for record in handle.steps.values()} == {1}


def test_a_requeued_dead_letter_replays_the_steps_its_job_stored(redis_client):
    handle = jobs.step_returns_a_set.enqueue("dlq")
    run_burst()
    assert handle.refresh().status == "dead"
    assert handle.error["class"] == "django_jobs.exceptions.StepResultNotJSON"
    assert "step 'bad' returned a set" in handle.error["message"]
    assert "pass a list instead of a set" in handle.error["message"]
    assert len(handle.history) == 1  # not retried: a retry would repeat the effect
    assert list(step_fields(handle)) == ["step:charge"]  # the bad one stored nothing
    letter = DeadLetter.objects.get(job_id=handle.id)
    assert letter.options["steps"]["charge"]["result"]["runs"] == 1

    new_id = dead_letters.requeue(letter)
    run_burst()
    requeued = JobHandle.get(new_id)
    assert requeued.status == "dead"  # the set again; its first step was replayed
    assert requeued.history[0]["steps_replayed"] == ["charge"]
    assert requeued.history[0]["steps_ran"] == ["bad"]
    assert jobs.step_effect_count("dlq:charge") == (1, 1)
    again = DeadLetter.objects.get(job_id=new_id)
    assert list(again.options["steps"]) == ["charge"]


def test_an_async_job_runs_its_steps_through_sync_to_async():
    handle = jobs.async_step_then_fails_once.enqueue("async")
    run_burst()
    assert handle.refresh().status == "succeeded"
    assert handle.result["runs"] == 1
    assert jobs.step_effect_count("async:charge") == (1, 1)
    assert handle.history[-1]["steps_replayed"] == ["charge"]


def test_the_same_step_name_twice_in_one_attempt_is_an_error():
    handle = jobs.same_step_twice.enqueue("twice")
    run_burst()
    handle.refresh()
    assert handle.status == "dead"
    assert "called context.step('charge', ...) twice" in handle.error["message"]
    assert jobs.step_effect_count("twice:charge") == (1, 1)  # replayed on attempt 2
    assert jobs.step_effect_count("twice:again") == (0, 0)
    assert [entry.get("steps_replayed") for entry in handle.history] == [None, ["charge"]]


def test_a_step_stored_after_the_lease_was_lost_is_refused():
    broker = get_broker()
    handle = jobs.two_steps_then_fails_once.enqueue("lost")
    (job,) = broker.fetch("default", "stale-worker", lease_ms=1, count=1).jobs
    job_key = broker.keys("default").job(job.id)
    broker.client.zadd(broker.keys("default").active, {job.id: 0})  # its lease ran out
    assert broker.recover("default").requeued == [job.id]
    with pytest.raises(LeaseLost, match="step 'charge' was not stored"):
        broker.store_step(job, "charge", '{"id": 1}')
    assert broker.client.hget(job_key, "step:charge") is None
    assert handle.refresh().status == "queued"


def test_the_first_stored_result_of_a_step_is_kept():
    broker = get_broker()
    jobs.two_steps_then_fails_once.enqueue("first")
    (job,) = broker.fetch("default", "w", lease_ms=30_000, count=1).jobs
    first = broker.store_step(job, "charge", '{"id":1}')
    assert broker.store_step(job, "charge", '{"id":2}') == first
    assert broker.stored_step(job, "charge") == first
    assert '"result":{"id":1}' in first and f'"attempt":{job.attempt}' in first


def test_steps_replay_in_eager_mode(settings):
    settings.JOBS = {**settings.JOBS, "EAGER": True}
    handle = jobs.two_steps_then_fails_once.enqueue("eager")
    assert handle.status == "succeeded"
    assert jobs.step_effect_count("eager:charge") == (1, 1)
    assert jobs.step_effect_count("eager:email") == (1, 1)


def test_a_job_without_steps_stores_none_and_its_history_says_nothing_of_them():
    handle = jobs.fails_twice.enqueue("plain")
    run_burst()
    assert handle.refresh().status == "succeeded"
    assert all("steps_ran" not in entry for entry in handle.history)
    assert handle.steps == {} and step_fields(handle) == {}


def test_a_step_name_must_be_a_non_empty_string():
    broker = get_broker()
    jobs.two_steps_then_fails_once.enqueue("names")
    (job,) = broker.fetch("default", "w", lease_ms=30_000, count=1).jobs
    context = JobContext(job, broker, lambda transition, *args: transition(*args))
    for bad in ("", 7, "x" * 201):
        with pytest.raises(ValueError, match="a step's name must be a non-empty str"):
            context.step(bad, print)

    async def later() -> None: ...

    with pytest.raises(TypeError, match="async function"):
        context.step("async", later)
