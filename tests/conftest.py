"""Fixtures: every test gets its own Redis key prefix on the real Redis, wiped after."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.test import override_settings

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# Set by tests/run.sh on its second and later databases: what a test marked
# redis_only checks does not depend on the database, and its first run covered it.
SKIP_REDIS_ONLY = os.environ.get("DJANGO_JOBS_TEST_SKIP_REDIS_ONLY") == "1"
_redis_only_deselected = pytest.StashKey[int]()


def pytest_collection_modifyitems(config, items):
    if not SKIP_REDIS_ONLY:
        return
    kept = [item for item in items if item.get_closest_marker("redis_only") is None]
    deselected = [item for item in items if item.get_closest_marker("redis_only") is not None]
    config.stash[_redis_only_deselected] = len(deselected)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def pytest_report_collectionfinish(config):
    if SKIP_REDIS_ONLY:
        count = config.stash.get(_redis_only_deselected, 0)
        return (
            f"redis_only: {count} tests deselected (DJANGO_JOBS_TEST_SKIP_REDIS_ONLY=1: "
            "their result does not depend on the database)"
        )
    return None


def wipe(client: redis.Redis, prefix: str) -> None:
    for pattern in (f"{{{prefix}:*", f"{prefix}:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def jobs_prefix(redis_client, settings):
    """A private key prefix per test, so tests never see each other's jobs."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    with override_settings(JOBS={**settings.JOBS, "PREFIX": prefix}):
        yield prefix
    wipe(redis_client, prefix)


@pytest.fixture
def opened() -> Iterator[list[BaseDatabaseWrapper]]:
    """The connections opened off the test's thread meanwhile; any left open is
    closed afterwards, so a failure leaves nothing to the collector either."""
    wrappers: list[BaseDatabaseWrapper] = []

    def created(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            wrappers.append(connection)

    connection_created.connect(created)
    try:
        yield wrappers
    finally:
        connection_created.disconnect(created)
        for wrapper in wrappers:
            if wrapper.connection is not None:
                wrapper.connection.close()


@pytest.fixture
def worker_processes():
    from tests.processes import WorkerProcesses

    processes = WorkerProcesses()
    yield processes
    processes.cleanup()


@pytest.fixture
def private_redis(settings):
    """A redis-server of this test's own; the test process and its workers use it."""
    from tests.services import RedisServer

    server = RedisServer().start()
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": server.url}):
        yield server
    server.cleanup()


@pytest.fixture
def private_redis_aof(settings):
    """Like private_redis, with appendonly on (fsync every second)."""
    from tests.services import RedisServer

    server = RedisServer(aof=True).start()
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": server.url}):
        yield server
    server.cleanup()


_FIGURES: list[str] = []


@pytest.fixture
def figures():
    """Measured figures of fault tests, printed in the test summary (CI output)."""
    return _FIGURES


def pytest_terminal_summary(terminalreporter):
    if _FIGURES:
        terminalreporter.section("measured figures")
        for line in _FIGURES:
            terminalreporter.line(line)


@pytest.fixture(scope="module")
def redis_cluster(request):
    """A 3-master Redis Cluster on free loopback ports, for one test module; its
    server is Debian's redis-server unless parametrized (indirectly) with a name
    of tests.redis_servers.SERVER_BINARIES."""
    from tests.redis_cluster import ClusterSetup
    from tests.redis_servers import SERVER_BINARIES

    binary = SERVER_BINARIES[getattr(request, "param", "redis-system")]
    if binary is None:
        pytest.skip(f"{request.param}: no such server installed here")
    setup = ClusterSetup(masters=3, binary=binary)
    yield setup
    setup.cleanup()


@pytest.fixture
def on_cluster(redis_cluster, settings, jobs_prefix):
    """The test's JOBS point at ``redis_cluster`` (keys under the test's prefix)."""
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": redis_cluster.url}):
        yield redis_cluster
