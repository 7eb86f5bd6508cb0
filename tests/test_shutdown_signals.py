"""How a stop signal reaches the worker: never by running worker code on the
interrupted thread (see django_jobs.worker.shutdown)."""

from __future__ import annotations

import os
import signal
import threading

import redis
from django.conf import settings

from django_jobs.worker.shutdown import handle_signals
from tests.helpers import poll


class RecordingWorker:
    """Stands in for a Worker whose request_stop needs a lock the main thread may
    hold at the moment a signal lands (an Event's, a Condition's, a stream's)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[bool] = []

    def request_stop(self, *, immediate: bool = False) -> None:
        if self.lock.acquire(timeout=2):  # on the interrupted thread this would hang
            self.requests.append(immediate)
            self.lock.release()


def test_a_signal_that_lands_while_the_main_thread_holds_a_lock_is_still_acted_on():
    worker = RecordingWorker()
    with handle_signals(worker):
        with worker.lock:
            os.kill(os.getpid(), signal.SIGTERM)
            # The handler runs here, on this thread, between two bytecodes.
            for _ in range(1000):
                pass
        poll(lambda: worker.requests == [False], timeout=5)


def test_a_signal_another_thread_receives_is_acted_on_while_the_main_thread_blocks(
    redis_client, jobs_prefix
):
    """The kernel may hand a process's signal to any thread. A Python-level handler
    waits for the main thread, here blocked on Redis as an idle worker is for up to
    30 s; the worker must be asked to stop at once all the same."""
    worker = RecordingWorker()
    heard: list[bool] = []
    wake_key = f"{jobs_prefix}:test-wake"

    def receive_the_signal() -> None:
        poll(lambda: any(c["cmd"] == "bzpopmin" for c in redis_client.client_list()))
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # to this thread
        try:
            poll(lambda: worker.requests == [False], timeout=5)
            heard.append(True)
        finally:
            redis_client.zadd(wake_key, {"w": 0})  # ends the main thread's wait

    with handle_signals(worker):
        receiver = threading.Thread(target=receive_the_signal)
        receiver.start()
        blocked = redis.Redis.from_url(settings.JOBS["REDIS_URL"])  # a connection of its own
        blocked.bzpopmin(wake_key, 30)  # blocked in a socket read, as a worker is
        receiver.join()
    assert heard == [True]


def test_the_second_signal_asks_for_an_immediate_stop_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT)
    worker = RecordingWorker()
    with handle_signals(worker):
        os.kill(os.getpid(), signal.SIGTERM)
        poll(lambda: worker.requests == [False], timeout=5)
        os.kill(os.getpid(), signal.SIGINT)
        poll(lambda: worker.requests == [False, True], timeout=5)
    assert signal.getsignal(signal.SIGINT) is before
    assert not [t for t in threading.enumerate() if t.name == "django-jobs-signals"]


def test_a_process_a_job_forks_is_stopped_by_its_own_signal_not_the_worker():
    """A forked child inherits the handler and the pipe; its SIGTERM must end the
    child as usual and never reach the worker."""
    worker = RecordingWorker()
    ready_read, ready_write = os.pipe()
    with handle_signals(worker):
        child = os.fork()
        if child == 0:  # the child: say it is running, wait for the signal that ends it
            try:
                os.write(ready_write, b"r")
                threading.Event().wait(30)
            finally:
                os._exit(3)  # reached only if SIGTERM did not end the process
        # Only once it runs: Python drops a signal that lands while fork() returns.
        assert os.read(ready_read, 1) == b"r"
        os.close(ready_read)
        os.close(ready_write)
        os.kill(child, signal.SIGTERM)
        _, status = os.waitpid(child, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)  # the worker's own first signal
        poll(lambda: worker.requests == [False], timeout=5)  # first, not second


def test_handlers_that_cannot_be_installed_leave_no_thread_or_pipe_behind():
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = (open_fds(), threading.active_count())
    errors: list[Exception] = []

    def off_the_main_thread() -> None:
        try:
            with handle_signals(RecordingWorker()):
                pass
        except ValueError as error:  # only the main thread may install handlers
            errors.append(error)

    thread = threading.Thread(target=off_the_main_thread)
    thread.start()
    thread.join()
    assert errors
    assert (open_fds(), threading.active_count()) == before
