"""Security: nothing named in a payload runs, logs carry no job arguments, the admin
escapes job data, and Redis passwords stay out of logs, command output and pages."""

from __future__ import annotations

import logging
import sys

import pytest
from django.test import Client, override_settings
from django.urls import reverse
from django.views.debug import ExceptionReporter

from django_jobs.models import DeadLetter
from tests.faults.garbage import CANARY_FILE
from tests.helpers import poll, run_burst
from tests.services import RedisServer
from tests.test_worker import _raw_job
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "s3cr3t-card-4111111111111111"
XSS = '<script>alert("xss")</script><img src=x onerror=alert(1)>'
WRONG_PASSWORD = "wr0ng-redis-password"
RAW_MARKUP = ("<script>alert", "<img src=x")


def test_a_payload_naming_any_importable_function_never_runs_it(tmp_path):
    touched = tmp_path / "pwned"
    names = [
        "os.system",
        "subprocess.call",
        "subprocess.run",
        "builtins.exec",
        "posix.system",
        "tests.faults.canary.explode",
        "tests.faults.canary",
        "tests.faults.canary:explode",
    ]
    ids = {name: _raw_job(name, f'["touch {touched}"]', attempts=1) for name in names}
    run_burst()
    for name, job_id in ids.items():
        letter = DeadLetter.objects.get(job_id=job_id)
        assert letter.error_class == "django_jobs.exceptions.UnknownJob"
        assert repr(name) in letter.error_message
    assert not touched.exists()
    assert not CANARY_FILE.exists()
    assert "tests.faults.canary" not in sys.modules


def test_default_logs_hold_no_job_arguments(caplog):
    caplog.set_level(logging.DEBUG, logger="django_jobs")
    jobs.record.enqueue(SECRET)
    jobs.fails_twice.enqueue(SECRET)
    jobs.always_fails.enqueue(SECRET)  # its own error message holds the argument too
    jobs.record.using(queue="missing").enqueue(SECRET)
    run_burst()
    run_burst(queues=("missing",))
    assert DeadLetter.objects.count() == 1
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    assert caplog.records  # the worker did log (attempts, the dead job)
    assert SECRET not in logged


def admin_pages(job_ids: list[str]) -> dict[str, str]:
    pages = {
        "dead letters": reverse("admin:django_jobs_deadletter_changelist"),
        "failure groups": reverse("admin:django_jobs_deadletter_groups"),
        "queues": reverse("admin:django_jobs_queues_changelist"),
        "queue": reverse("admin:django_jobs_queues_queue", args=["default"]),
        "retrying queue": reverse("admin:django_jobs_queues_queue", args=["default"])
        + "?state=retrying",
    }
    for letter in DeadLetter.objects.all():
        pages[f"dead letter {letter.job_id}"] = reverse(
            "admin:django_jobs_deadletter_change", args=[letter.pk]
        )
    for job_id in job_ids:
        pages[f"job {job_id}"] = reverse("admin:django_jobs_queues_job", args=[job_id])
    return pages


def test_the_admin_escapes_job_data_everywhere(admin_client):
    named = _raw_job(XSS, '["x"]', attempts=1)  # unknown name: dies naming it
    failed = jobs.always_fails.enqueue(XSS)  # the argument is in its error message
    run_burst()
    waiting = jobs.record.enqueue(XSS)
    progress = jobs.record.enqueue("progress")
    job_ids = [named, failed.id, waiting.id, progress.id]
    assert DeadLetter.objects.count() == 2
    for page, url in admin_pages(job_ids).items():
        response = admin_client.get(url)
        assert response.status_code == 200, page
        for markup in RAW_MARKUP:
            assert markup not in response.text, f"unescaped job data on the {page} page"
    shown = admin_client.get(reverse("admin:django_jobs_queues_job", args=[waiting.id])).text
    assert "&lt;script&gt;" in shown  # shown, escaped


@pytest.fixture
def password_redis(settings):
    server = RedisServer(password="hunter2-redis-password").start()
    yield server
    server.cleanup()


def test_a_redis_password_never_appears_in_command_output_or_worker_logs(
    password_redis, worker_processes
):
    password = password_redis.password
    wrong = WRONG_PASSWORD
    outputs = []
    for url in (password_redis.url, password_redis.url_with(wrong)):
        for command in (("check",), ("check", "--deploy"), ("jobs", "health"), ("jobs", "status")):
            process = worker_processes.manage(*command, REDIS_URL=url)
            outputs.append(worker_processes.wait(process, timeout=60))
        burst = worker_processes.start("--burst", "-v", "3", REDIS_URL=url)
        if url == password_redis.url:
            outputs.append(worker_processes.wait(burst, timeout=60))
        else:  # it says what is wrong, then keeps retrying: read what it said, stop it
            log = worker_processes.logs[burst.pid]
            poll(lambda log=log: "Redis" in log.read_text(), timeout=30)
            burst.kill()
            outputs.append(worker_processes.wait(burst, timeout=30))
    text = "\n".join(outputs)
    assert "invalid" in text.lower() or "auth" in text.lower(), text  # the wrong one failed
    assert password not in text
    assert wrong not in text


@pytest.fixture
def refused_admin(password_redis, settings):
    """A superuser's client on an admin whose Redis refuses its password."""
    from django.contrib.auth.models import User

    url = password_redis.url_with(WRONG_PASSWORD)
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": url}):
        client = Client(raise_request_exception=False)
        client.force_login(User.objects.create_superuser("boss", "b@example.com", "pw"))
        yield client


def test_a_redis_password_never_appears_in_error_pages_or_their_logs(refused_admin, caplog):
    response = refused_admin.get(reverse("admin:django_jobs_queues_changelist"))
    assert response.status_code == 500
    logged = "\n".join(logging.Formatter("%(message)s").format(record) for record in caplog.records)
    assert "AuthenticationError" in logged
    assert WRONG_PASSWORD not in response.content.decode() + logged


def test_a_redis_password_never_appears_in_the_debug_error_page(refused_admin):
    refused_admin.raise_request_exception = True
    with pytest.raises(Exception) as raised:
        refused_admin.get(reverse("admin:django_jobs_queues_changelist"))
    # From the client call on: this test's own frame is not part of the page.
    reporter = ExceptionReporter(None, raised.type, raised.value, raised.tb.tb_next)
    with override_settings(DEBUG=True):
        page = reporter.get_traceback_html() + reporter.get_traceback_text()
    assert WRONG_PASSWORD not in str(raised.value)
    assert WRONG_PASSWORD not in page
