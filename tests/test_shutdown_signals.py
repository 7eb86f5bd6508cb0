"""How a stop signal reaches the worker: never by running worker code on the
interrupted thread (see django_jobs.worker.shutdown)."""

from __future__ import annotations

import os
import signal
import threading

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
