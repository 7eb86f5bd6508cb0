"""The pytest plugin of django-jobs, loaded through the ``pytest11`` entry point once
the package is installed: it adds the ``jobs`` fixture.

    def test_signup_sends_the_welcome_email(client, jobs, mailoutbox):
        client.post("/signup/", {"email": "ann@example.com"})
        assert [job.args for job in jobs.enqueued_for(send_welcome)] == [["ann@example.com"]]
        jobs.drain()
        assert len(mailoutbox) == 1

The recorder is imported when a test first asks for the fixture: it needs the
Django app registry, which pytest-django sets up after plugins are loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from django_jobs.testing.recorder import JobRecorder


@pytest.fixture
def jobs() -> Iterator[JobRecorder]:
    """Records the jobs this test enqueues instead of sending them to Redis (see
    :mod:`django_jobs.testing.recorder`): ``jobs.enqueued``,
    ``jobs.enqueued_for(fn)``, ``jobs.drain()``."""
    from django_jobs.testing.recorder import JobRecorder

    with JobRecorder() as recorder:
        yield recorder
