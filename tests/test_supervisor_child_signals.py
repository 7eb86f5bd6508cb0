"""A supervised child never runs the supervisor's signal handler it inherits through
fork: not before its worker's own is in place, nor once its worker's run is over
(that handler would signal the child itself again and again, to a RecursionError)."""

from __future__ import annotations

import multiprocessing
import signal

import pytest

from django_jobs.worker.runner import WorkerOptions
from django_jobs.worker.supervisor import _child_main

pytestmark = pytest.mark.django_db(transaction=True)


def _supervisors_handler(signum: int, frame: object) -> None:
    raise AssertionError("the supervisor's handler ran in a child")


def _child(done) -> None:  # type: ignore[no-untyped-def]
    _child_main(WorkerOptions(queues=["default"], burst=True), [])
    handlers = {signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    done.send(handlers == {signal.SIG_DFL})


def test_a_child_whose_worker_has_finished_has_the_default_stop_handlers():
    previous = {
        sig: signal.signal(sig, _supervisors_handler) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        receiving, sending = multiprocessing.Pipe(duplex=False)
        child = multiprocessing.get_context("fork").Process(target=_child, args=(sending,))
        child.start()
        assert receiving.poll(60), "the child's burst worker did not finish"
        assert receiving.recv() is True
        child.join(60)
        assert child.exitcode == 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
