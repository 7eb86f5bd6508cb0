"""A worker whose log cannot be written (stderr a pipe nobody reads, full: a
supervisor that stopped reading) keeps running jobs: no thread waits for the log
(django_jobs/worker/log_writer.py); what it could not keep is counted and said."""

from __future__ import annotations

import contextvars
import gc
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref

import pytest
from django.utils.log import AdminEmailHandler

from django_jobs.worker import log_writer
from django_jobs.worker.log_writer import QUEUE_RECORDS
from tests.helpers import poll
from tests.processes import ROOT, fill, kill_if_running, worker_env
from tests.testapp import jobs

worker_process = [
    pytest.mark.slow,
    pytest.mark.redis_only,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/fd"),
]


def _marked(test):
    for mark in worker_process:
        test = mark(test)
    return test


def _start(pipe_write_end: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "django", "runjobs", "--no-scheduler", *args],
        cwd=ROOT,
        env=worker_env(),
        stdout=pipe_write_end,
        stderr=pipe_write_end,
    )


def _succeeded(handles) -> bool:
    return all(handle.refresh().status == "succeeded" for handle in handles)


@_marked
def test_jobs_that_log_complete_while_stderr_is_a_full_pipe_and_drops_are_counted():
    read_end, write_end = os.pipe()
    process = _start(write_end, "--concurrency", "3")
    output = bytearray()
    try:
        first = jobs.logs_lines.enqueue(1)
        poll(lambda: _succeeded([first]), timeout=60)
        fill(write_end)  # nobody reads it from now on
        lines = QUEUE_RECORDS // 2
        chatty = [jobs.logs_lines.enqueue(lines) for _ in range(3)]
        poll(lambda: _succeeded(chatty), timeout=60)

        reader = threading.Thread(target=_read_all, args=(read_end, output), daemon=True)
        reader.start()  # the supervisor reads again: what was kept comes, then the count
        poll(lambda: b"log records dropped" in output, timeout=60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        kill_if_running(process)
        os.close(write_end)
    reader.join(timeout=30)
    os.close(read_end)
    written = len(re.findall(rb"line \d+ of %d, as a chatty job" % lines, output))
    dropped = sum(int(n) for n in re.findall(rb"(\d+) log records dropped", output))
    assert 0 < written < 3 * lines
    assert written + dropped >= 3 * lines  # none lost without being counted


@_marked
def test_a_burst_worker_with_a_full_stderr_pipe_runs_its_jobs_and_exits():
    handles = [jobs.logs_lines.enqueue(100) for _ in range(3)]
    read_end, write_end = os.pipe()
    fill(write_end)  # full before the worker logs a word
    process = _start(write_end, "--burst")
    try:
        assert process.wait(timeout=60) == 0  # the last flush given up after 1 s
    finally:
        kill_if_running(process)
        os.close(write_end)
        os.close(read_end)
    assert _succeeded(handles)


def _crash(mode: str, stderr: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "tests/log_crash.py", mode],
        cwd=ROOT,
        env=worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


@_marked
def test_a_child_whose_run_raises_writes_its_queued_log_first():
    process = _crash("child", subprocess.PIPE)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        kill_if_running(process)
    assert b"child exit status 1" in stderr
    assert re.findall(rb"line (\d) before the crash", stderr) == [b"0", b"1", b"2", b"3", b"4"]


@_marked
def test_a_worker_whose_run_raises_with_a_full_stderr_pipe_exits():
    read_end, write_end = os.pipe()
    fill(write_end)  # full before the worker logs a word
    process = _crash("main", write_end)
    try:
        assert process.wait(timeout=60) == 1  # the flush and report given up after 1 s each
    finally:
        kill_if_running(process)
        os.close(write_end)
        os.close(read_end)


def _read_all(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 65536):
        into.extend(chunk)


class _Held(logging.Handler):
    """A handler that cannot write until opened (a full pipe), then records."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.messages: list[str] = []
        self.threads: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.opened.wait(30)
        self.messages.append(self.format(record))
        self.threads.append(threading.get_ident())


@pytest.fixture
def own_logger():
    logger = logging.getLogger("tests.log_writer")
    logger.propagate = False  # its records queued once, for its own handlers
    others = list(logger.handlers)  # pytest's capture handlers: the test's own only
    for handler in others:
        logger.removeHandler(handler)
    yield logger
    log_writer.finish(5)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for handler in others:
        logger.addHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def test_a_blocked_handler_never_blocks_the_caller_and_what_is_dropped_is_counted(own_logger):
    held = _Held()
    own_logger.addHandler(held)
    log_writer.install(size=3)
    started = time.monotonic()
    own_logger.warning("record 0")
    assert held.entered.wait(10)  # the writer holds record 0, blocked
    for n in range(1, 10):  # three wait in the queue; six are dropped
        own_logger.warning("record %d", n)
    assert time.monotonic() - started < 5.0
    held.opened.set()
    assert log_writer.finish(5)
    assert held.messages == [
        "record 0",
        "record 1",
        "record 2",
        "record 3",
        "6 log records dropped: the log was not written as fast as this worker "
        "logged (its output not read?)",
    ]


def test_the_projects_handlers_keep_their_levels_and_filters_and_come_back(own_logger):
    warnings_only, unfiltered = _Held(logging.WARNING), _Held()
    for handler in (warnings_only, unfiltered):
        handler.opened.set()
        own_logger.addHandler(handler)
    unfiltered.addFilter(lambda record: "secret" not in record.getMessage())
    own_logger.setLevel(logging.INFO)
    before = list(own_logger.handlers)
    log_writer.install()
    assert warnings_only not in own_logger.handlers  # wrapped
    own_logger.info("info")
    own_logger.warning("warning")
    own_logger.warning("secret warning")
    assert log_writer.finish(5)
    assert own_logger.handlers == before
    assert warnings_only.messages == ["warning", "secret warning"]
    assert unfiltered.messages == ["info", "warning"]


def test_a_message_is_built_at_the_call_with_its_arguments_as_they_were(own_logger):
    held = _Held()
    own_logger.addHandler(held)
    log_writer.install()
    own_logger.warning("first")
    assert held.entered.wait(10)  # the writer busy (a slow pipe)
    state = ["queued"]
    own_logger.warning("state %s", state)
    state[0] = "changed later"
    held.opened.set()
    assert log_writer.finish(5)
    assert held.messages == ["first", "state ['queued']"]


_job = contextvars.ContextVar("job", default="-")
_local = threading.local()


class _JobFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.job = f"{_job.get()}/{getattr(_local, 'job', '-')}"
        return True


def test_a_handlers_filter_runs_on_the_thread_that_logs(own_logger):
    held = _Held()
    held.opened.set()
    held.addFilter(_JobFilter())
    held.setFormatter(logging.Formatter("%(job)s %(message)s"))
    own_logger.addHandler(held)
    log_writer.install()

    def job() -> None:
        _job.set("job-1")
        _local.job = "job-1"
        own_logger.warning("hello")

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert log_writer.finish(5)
    assert held.messages == ["job-1/job-1 hello"]


@pytest.mark.django_db(transaction=True)
def test_a_str_that_queries_the_database_runs_on_the_thread_that_logs(own_logger):
    from django.contrib.auth.models import User
    from django.db.backends.signals import connection_created

    opened_in: list[str] = []

    def on_created(sender, connection, **kwargs) -> None:
        opened_in.append(threading.current_thread().name)

    class Users:
        def __str__(self) -> str:
            return f"{User.objects.count()} users"

    held = _Held()
    held.opened.set()
    own_logger.addHandler(held)
    User.objects.count()  # this thread's connection is open
    connection_created.connect(on_created)
    try:
        log_writer.install()
        own_logger.warning("%s", Users())
        assert log_writer.finish(5)
    finally:
        connection_created.disconnect(on_created)
    assert held.messages == ["0 users"]
    assert opened_in == []  # none opened in the writer thread


def test_records_no_handler_wants_take_no_room_in_the_queue(own_logger):
    held = _Held(logging.WARNING)
    held.addFilter(lambda record: "secret" not in record.getMessage())
    own_logger.handlers = [held, logging.NullHandler()]  # not pytest's capture too
    own_logger.setLevel(logging.DEBUG)  # a DEBUG logger, its handler WARNING
    log_writer.install(size=3)
    own_logger.warning("first")
    assert held.entered.wait(10)  # the writer blocked a moment (a slow pipe)
    for n in range(10):
        own_logger.debug("debug %d", n)
        own_logger.warning("secret %d", n)
    own_logger.warning("the one that matters")
    held.opened.set()
    assert log_writer.finish(5)
    assert held.messages == ["first", "the one that matters"]


def test_a_queued_exception_keeps_no_frame_of_the_failed_job_alive(own_logger):
    held = _Held()
    own_logger.addHandler(held)
    log_writer.install()
    own_logger.warning("first")
    assert held.entered.wait(10)  # the writer blocked (a full pipe)

    class Big:
        pass

    def job() -> weakref.ref:
        data = Big()  # a job's local: a large DataFrame, say
        try:
            raise ValueError("boom")
        except ValueError:
            own_logger.exception("job failed")
        return weakref.ref(data)

    data = job()
    gc.collect()
    alive = data() is not None
    held.opened.set()
    assert log_writer.finish(5)
    assert not alive
    assert held.messages[1].startswith("job failed\nTraceback (most recent call last):")
    assert held.messages[1].endswith("ValueError: boom")


def test_mail_admins_shows_the_locals_as_they_were_when_logged(own_logger, settings, mailoutbox):
    settings.ADMINS = [("a", "a@example.com")]
    held = _Held()
    own_logger.addHandler(held)
    mail = AdminEmailHandler(include_html=True)
    mail.setLevel(logging.ERROR)
    own_logger.addHandler(mail)
    log_writer.install()
    own_logger.warning("first")
    assert held.entered.wait(10)  # the writer busy a moment

    def loop() -> None:
        for attempt in ["attempt-one", "attempt-two"]:
            try:
                raise ValueError(attempt)
            except ValueError:
                if attempt == "attempt-one":
                    own_logger.error("failed", exc_info=True)

    loop()
    assert len(mailoutbox) == 1  # sent from the thread that logged, at once
    held.opened.set()
    assert log_writer.finish(5)
    html = mailoutbox[0].alternatives[0][0]
    assert "attempt-one" in html
    assert "attempt-two" not in html  # the loop's later value, not the one logged
    assert held.messages[1].startswith("failed\nTraceback")


class _Chatty(logging.Handler):
    """Logs as it writes (its HTTP client does, say), and, as such handlers do,
    writes nothing it logs itself while writing."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = False
        self.asked: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.asked.append(record.getMessage())
        if self.writing:
            return
        self.writing = True
        try:
            logging.getLogger("tests.log_writer").warning("sent %s", record.getMessage())
        finally:
            self.writing = False


def test_a_handler_that_logs_as_it_writes_does_not_loop(own_logger):
    chatty = _Chatty()
    own_logger.handlers = [chatty]
    log_writer.install()
    own_logger.warning("one")
    poll(lambda: len(chatty.asked) >= 2, timeout=10)
    assert log_writer.finish(5)
    assert chatty.asked == ["one", "sent one"]  # queued, it came back for ever


def test_a_message_that_cannot_be_built_is_reported_not_raised(own_logger, capsys):
    held = _Held()
    held.opened.set()
    own_logger.handlers = [held]
    log_writer.install()
    own_logger.warning("%d jobs", "not a number")  # as without the writer: no raise
    own_logger.warning("next")
    assert log_writer.finish(5)
    assert held.messages == ["next"]
    assert "--- Logging error ---" in capsys.readouterr().err


@_marked
def test_a_signal_handler_that_logs_mid_log_call_never_deadlocks_its_thread():
    """A worker's SIGTERM handler logs. Run between two bytecodes of its thread's own
    log call, it must not wait for a lock that call holds (queue.Queue's did: the
    worker never stopped, its supervisor waited for ever)."""
    process = subprocess.Popen(
        [sys.executable, "tests/log_signal.py"],
        cwd=ROOT,
        env=worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        kill_if_running(process)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert stdout.startswith(b"done"), stdout
