"""``manage.py jobs``: each action against real state, as text and as JSON."""

from __future__ import annotations

import io
import json
import socket
import tempfile
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

from django_jobs.broker.connection import get_broker
from django_jobs.health import unapplied_migrations
from django_jobs.models import DeadLetter
from tests.helpers import poll, run_burst, serving
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def jobs_command(*args: str) -> str:
    out = io.StringIO()
    call_command("jobs", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def health() -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("jobs", "health", stdout=out, stderr=err)
    except SystemExit as exit:
        return int(exit.code or 0), err.getvalue()
    return 0, out.getvalue()


def test_status_shows_each_queue_in_text_and_json():
    jobs.record.enqueue_many([("a",), ("b",)])
    jobs.record.using(delay=600).enqueue("later")
    text = jobs_command("status")
    assert "queue" in text and "default" in text and "0 worker(s)" in text
    data = json.loads(jobs_command("status", "--json"))
    (default,) = [q for q in data["queues"] if q["name"] == "default"]
    assert (default["waiting"], default["scheduled"], default["paused"]) == (2, 1, False)


def test_pause_and_resume_through_the_command():
    assert json.loads(jobs_command("pause", "default", "--json")) == {
        "queue": "default",
        "paused": True,
    }
    handle = jobs.record.enqueue("held")
    run_burst()
    assert handle.refresh().status == "queued"
    assert "Resumed" in jobs_command("resume", "default")
    run_burst()
    assert handle.refresh().status == "succeeded"


def test_purge_asks_unless_told_yes(monkeypatch):
    handle = jobs.record.enqueue("doomed")
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    with pytest.raises(CommandError, match="Nothing purged"):
        jobs_command("purge", "default")
    assert handle.refresh().status == "queued"
    assert json.loads(jobs_command("purge", "default", "--yes", "--json"))["cancelled"] == 1
    assert handle.refresh().status == "cancelled"


def test_inspect_shows_state_and_history_and_arguments_only_when_asked():
    handle = jobs.fails_twice.enqueue("secret-key")
    run_burst()
    text = jobs_command("inspect", handle.id)
    assert "succeeded" in text and "secret-key" not in text
    data = json.loads(jobs_command("inspect", handle.id, "--json", "--show-arguments"))
    assert data["status"] == "succeeded" and data["attempts"] == 3
    assert [entry["outcome"] for entry in data["history"]] == ["failed", "failed", "succeeded"]
    assert data["args"] == ["secret-key"]
    with pytest.raises(CommandError, match="No job 'nope'"):
        jobs_command("inspect", "nope")


def test_inspect_shows_the_durable_steps_and_their_results_only_when_asked():
    handle = jobs.two_steps_then_fails_once.enqueue("inspect")
    run_burst()
    data = json.loads(jobs_command("inspect", handle.id, "--json"))
    assert data["steps"] == {"charge": {"attempt": 1}, "email": {"attempt": 1}}
    assert data["history"][1]["steps_replayed"] == ["charge", "email"]
    shown = json.loads(jobs_command("inspect", handle.id, "--json", "--show-arguments"))
    assert shown["steps"]["charge"]["result"]["runs"] == 1


def test_requeue_dead_filters_dry_runs_and_requeues_new_jobs_that_run():
    jobs.fails_permanently.enqueue("one")
    jobs.fails_permanently.enqueue("two")
    jobs.fails_with_type_error.enqueue("other")
    run_burst()
    assert DeadLetter.objects.count() == 3
    dry = json.loads(
        jobs_command("requeue-dead", "--error-class", "KeyError", "--dry-run", "--json")
    )
    assert len(dry["would_requeue"]) == 2
    assert DeadLetter.objects.filter(status="dead").count() == 3
    done = json.loads(
        jobs_command(
            "requeue-dead", "--job", jobs.fails_permanently.name, "--since", "1 hour", "--json"
        )
    )
    assert len(done["requeued"]) == 2
    assert DeadLetter.objects.filter(status="requeued").count() == 2
    run_burst()
    assert Effect.objects.filter(key="one").count() == 2  # the first run and the requeued one
    with pytest.raises(CommandError, match="neither an ISO time"):
        jobs_command("requeue-dead", "--since", "yesterday-ish")


def test_health_passes_with_a_worker_serving_the_waiting_jobs():
    with serving(concurrency=1):
        poll(lambda: get_broker().workers())
        assert health() == (0, "healthy\n")


def test_health_fails_when_redis_cannot_be_reached(settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.JOBS = {**settings.JOBS, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    code, problems = health()
    assert code == 1 and "Redis refuses writes or cannot be reached" in problems


def test_health_fails_for_waiting_jobs_no_live_worker_serves(settings):
    settings.JOBS = {**settings.JOBS, "LEASE_SECONDS": 0.2}
    get_broker().heartbeat("gone", {"host": "h", "pid": 1, "queues": "default"}, ttl_seconds=60)
    jobs.record.enqueue("stuck")
    code, problems = poll(lambda: (result := health())[0] and result)
    assert code == 1 and "no live worker serves it" in problems


def test_health_fails_for_a_queue_over_its_max_latency(settings):
    settings.JOBS = {**settings.JOBS, "QUEUES": {"default": {"max_latency": 0}}}
    jobs.record.enqueue("late")
    code, problems = poll(lambda: (result := health())[0] and "max_latency" in result[1] and result)
    assert code == 1 and "its oldest job has waited" in problems


def test_health_fails_for_an_unmigrated_database(worker_processes):
    empty = Path(tempfile.mkdtemp()) / "unmigrated.sqlite3"
    process = worker_processes.manage(
        "jobs", "health", DJANGO_JOBS_TEST_DB="sqlite", DJANGO_JOBS_TEST_DB_NAME=str(empty)
    )
    output = worker_processes.wait(process, timeout=60)
    assert process.returncode == 1
    assert "migrations are not applied (apps " in output and "django_jobs" in output


@pytest.mark.django_db
def test_health_finds_a_migration_file_not_recorded_as_applied():
    """The check reads the files on disk against the recorder; one file not recorded
    (a deploy that has not run migrate yet) is reported by Django's executor."""
    recorder = MigrationRecorder(connection)
    newest = max(name for app, name in recorder.applied_migrations() if app == "django_jobs")
    assert unapplied_migrations() is None
    recorder.record_unapplied("django_jobs", newest)
    assert unapplied_migrations() == (
        "migrations are not applied (apps django_jobs): run 'python manage.py migrate'"
    )


def test_health_leaves_a_waiting_worker_its_wake_up():
    """The probe waits on the queues' markers as a worker does, but must not pop one:
    an enqueue's wake-up, set while the worker was busy fetching, would be gone and
    the worker would sleep through its whole idle wait with the job ready."""
    broker = get_broker()
    handle = jobs.record.enqueue("woken")  # no worker waits yet: its marker stays set
    marker = broker.keys("default").marker
    assert broker.client.zcard(marker) == 1
    health()
    assert broker.client.zcard(marker) == 1
    started = time.monotonic()
    woken = broker.wait_then_fetch(["default"], "idle-worker", 10.0, "default", 30_000, 1)
    assert [job.id for job in woken.jobs] == [handle.id]
    assert time.monotonic() - started < 5.0  # woken at once, not at the end of its wait
