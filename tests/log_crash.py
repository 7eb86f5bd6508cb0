"""A worker whose run raises while its log is still queued (tests/test_log_writer.py):
``child``, a ``--processes`` child (its handler slow: the lines still queued when it
raises); ``main``, ``runjobs`` itself (its stderr a full pipe: the log cannot be
written at all)."""

import logging
import multiprocessing
import sys
import time

import django

django.setup()

from django.core.management import call_command  # noqa: E402

from django_jobs.worker import log_writer, runner  # noqa: E402
from django_jobs.worker.supervisor import _child_main  # noqa: E402


def crash(self) -> None:
    for n in range(5):
        logging.getLogger("django_jobs.worker").error("line %d before the crash", n)
    raise RuntimeError("the run crashed")


class SlowHandler(logging.StreamHandler):
    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.05)  # a slow pipe
        super().emit(record)


runner.Worker._fetch_loop = crash  # type: ignore[method-assign]
if sys.argv[1] == "child":
    logging.getLogger("django_jobs").handlers = [SlowHandler()]
    log_writer.install()
    options = runner.WorkerOptions(
        queues=["default"],
        concurrency=1,
        prefetch=0,
        burst=True,
        max_jobs=None,
        grace_seconds=1.0,
        max_memory_mb=None,
        scheduler=False,
        owns_process=True,
    )
    child = multiprocessing.get_context("fork").Process(target=_child_main, args=(options, []))
    child.start()
    child.join(60)
    print("child exit status", child.exitcode, file=sys.stderr)
    log_writer.finish(5)
else:
    call_command("runjobs", "--burst", "--no-scheduler", "--queues", "default")
