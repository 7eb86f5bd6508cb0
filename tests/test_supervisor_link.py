"""The pipe a supervised worker process reports its jobs through."""

from __future__ import annotations

import os

from django_jobs.broker.api import FetchedJob
from django_jobs.worker.supervisor_link import ChildJobs, SupervisorLink


def fetched(job_id: str, attempt: int, queue: str = "default", lease: int = 0) -> FetchedJob:
    token = f"w1#{lease or attempt}"
    return FetchedJob(job_id, queue, "n", "[]", "{}", "{}", attempt, 3, 0, 0, token)


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
        assert jobs.held == {("a", 1): ("default", 1)}
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


def test_a_job_given_back_and_leased_again_is_a_new_lease_for_the_supervisor():
    """Same job, same attempt (a give-back keeps it), a new lease: the supervisor
    renews the new token, and the end of the earlier lease does not drop the new one."""
    read_fd, write_fd = os.pipe()
    try:
        link = SupervisorLink(write_fd, "w1")
        first, again = fetched("a", 1, lease=4), fetched("a", 1, lease=5)
        link.held([first])
        link.limit(first, 10.0, 1.0)
        link.held([again])
        link.released([first])
        jobs = ChildJobs()
        jobs.feed(os.read(read_fd, 65536))
        assert jobs.held == {("a", 5): ("default", 1)}
        assert jobs.limits == {}
        renewed = jobs.job(("a", 5))
        assert (renewed.token, renewed.attempt) == ("w1#5", 1)
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_job_left_running_stays_held_for_the_supervisor_to_give_back():
    """Left behind, a job stays held (its lease renewed) until the supervisor gives it
    back once the child is gone; a job the child no longer holds is not left behind,
    and a child whose supervisor is gone learns that it must give its jobs back."""
    read_fd, write_fd = os.pipe()
    try:
        link = SupervisorLink(write_fd, "w1")
        link.held([fetched("a", 1), fetched("b", 1)])
        link.released([fetched("b", 1)])
        assert link.left_behind([fetched("a", 1), fetched("b", 1)])
        jobs = ChildJobs()
        jobs.feed(os.read(read_fd, 65536))
        assert jobs.held == {("a", 1): ("default", 1)}
        assert jobs.left_behind == {("a", 1)}
    finally:
        os.close(read_fd)
        os.close(write_fd)
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    orphan = SupervisorLink(write_fd, "w2")
    assert not orphan.left_behind([fetched("c", 1)])
    os.close(write_fd)
