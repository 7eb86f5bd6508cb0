"""A process that logs without pause while a signal handler that logs interrupts it
about every millisecond, through runjobs' log writer (tests/test_log_writer.py): a
worker's SIGTERM handler logs, and may run in the middle of its thread's own log
call. Prints "done" if it got through."""

import logging
import os
import signal
import threading
import time

from django_jobs.worker import log_writer

logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))  # noqa: SIM115
log = logging.getLogger("django_jobs.test")
log_writer.install()
signal.signal(signal.SIGUSR1, lambda signum, frame: log.info("signalled"))
until = time.monotonic() + 2


def signal_often() -> None:
    while time.monotonic() < until:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.001)  # the interruptions themselves: nothing here waits for a result


threading.Thread(target=signal_often, daemon=True).start()
count = 0
while time.monotonic() < until:
    log.info("record %d", count)
    count += 1
log_writer.finish(1)
print("done", count, flush=True)
