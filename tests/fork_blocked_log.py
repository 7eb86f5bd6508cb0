"""A ``--processes`` supervisor whose log writer is stuck in the middle of a write
when its child is due (tests/test_supervisor_fork_log.py): a handler whose stream
(a file's, buffered) is the pipe at fd $LOG_FD, full. The writer holds the stream's
buffer lock through that write. Prints "blocked" once the writer is stuck, "done"
at the end."""

import logging
import os
import time

import django

django.setup()

from django_jobs.worker import log_writer  # noqa: E402
from django_jobs.worker.runner import WorkerOptions  # noqa: E402
from django_jobs.worker.supervisor import Supervisor  # noqa: E402

logger = logging.getLogger("django_jobs.worker")
logger.addHandler(logging.StreamHandler(os.fdopen(int(os.environ["LOG_FD"]), "w")))
log_writer.install()
logger.warning("a line the full pipe holds up")
writer = log_writer._writer
assert writer is not None
wchan = f"/proc/self/task/{writer.thread.native_id}/wchan"
deadline = time.monotonic() + 60
while "pipe_write" not in open(wchan).read():  # noqa: SIM115
    assert time.monotonic() < deadline, "the log writer never blocked on the pipe"
    time.sleep(0.01)  # polling for a state, with a deadline
print("blocked", flush=True)
Supervisor(WorkerOptions(queues=["fork-blocked-log"], burst=True), processes=1).run()
log_writer.finish(30)
print("done", flush=True)
