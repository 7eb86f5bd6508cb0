"""The pipe a supervised worker process reports its jobs through."""

from __future__ import annotations

import os

from django_jobs.broker.api import FetchedJob
from django_jobs.worker.supervisor_link import ChildJobs, SupervisorLink


def fetched(job_id: str, attempt: int, queue: str = "default") -> FetchedJob:
    return FetchedJob(job_id, queue, "n", "[]", "{}", "{}", attempt, 3, 0, 0, f"w1#{attempt}")


def test_the_supervisor_sees_what_the_child_holds_even_from_split_writes():
    read_fd, write_fd = os.pipe()
    try:
        link = SupervisorLink(write_fd, "w1")
        link.held([fetched("a", 1), fetched("b", 2, "emails")])
        link.limit(fetched("a", 1), 123.5, 2.0)
        link.released([fetched("b", 2)])
        data = os.read(read_fd, 65536)
        jobs = ChildJobs()
        for start in range(0, len(data), 7):  # the pipe may deliver any split
            jobs.feed(data[start : start + 7])
        assert jobs.worker_id == "w1"
        assert jobs.held == {("a", 1): "default"}
        assert jobs.limits == {("a", 1): (123.5, 2.0)}
        assert jobs.job(("a", 1)).token == "w1#1"
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_child_whose_supervisor_is_gone_keeps_working():
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    link = SupervisorLink(write_fd, "w1")  # EPIPE: noted once, then ignored
    link.held([fetched("a", 1)])
    os.close(write_fd)
