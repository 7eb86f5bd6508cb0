"""A Redis that evicts or forgets jobs is warned about, with the fix: by
``check --deploy`` and once as ``runjobs`` starts; never when Redis is away."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

from django_jobs.checks import check_redis_durability
from tests.services import RedisServer, free_port

NO_CONFIG = ("--rename-command", "CONFIG", "")  # as managed services disable it


@pytest.fixture
def redis_server(request, settings):
    """A private redis-server started with the test's ``aof`` and ``options``."""
    aof, options = request.param
    server = RedisServer(aof=aof, options=options).start()
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": server.url}):
        yield server
    server.cleanup()


def warnings() -> list[tuple[str, str, str]]:
    return [(w.id, w.msg, w.hint) for w in check_redis_durability()]


def ids() -> list[str]:
    return [w[0] for w in warnings()]


@pytest.mark.parametrize("redis_server", [(True, ())], indirect=True)
def test_a_redis_that_keeps_jobs_gets_no_warning(redis_server):
    assert warnings() == []


@pytest.mark.parametrize(
    "redis_server", [(True, ("--maxmemory-policy", "allkeys-lru"))], indirect=True
)
def test_an_evicting_redis_is_w010_with_the_fix(redis_server):
    ((check_id, message, hint),) = warnings()
    assert check_id == "django_jobs.W010"
    assert "maxmemory-policy allkeys-lru" in message
    assert "CONFIG SET maxmemory-policy noeviction" in hint


@pytest.mark.parametrize("redis_server", [(False, ())], indirect=True)  # --save "" --appendonly no
def test_a_redis_without_persistence_is_w011_with_the_fix(redis_server):
    ((check_id, message, hint),) = warnings()
    assert check_id == "django_jobs.W011"
    assert "a restart loses every job" in message
    assert "appendonly yes" in hint


@pytest.mark.parametrize(
    "redis_server", [(False, ("--maxmemory-policy", "allkeys-lru", *NO_CONFIG))], indirect=True
)
def test_without_config_info_still_shows_eviction_and_says_what_it_cannot_tell(redis_server):
    found = warnings()
    assert [w[0] for w in found] == ["django_jobs.W010", "django_jobs.W012"]
    assert "whether RDB snapshots are configured (AOF is off)" in found[1][1]
    assert "read INFO instead" in found[1][1]


@pytest.mark.parametrize("redis_server", [(True, NO_CONFIG)], indirect=True)
def test_without_config_a_redis_info_shows_safe_gets_no_warning(redis_server):
    assert warnings() == []


def test_an_unreachable_redis_is_not_this_checks_concern_and_does_not_hold_it_up(settings):
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": nobody}):
        started = time.monotonic()
        assert warnings() == []
    assert time.monotonic() - started < 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "redis_server", [(True, ("--maxmemory-policy", "volatile-lru"))], indirect=True
)
def test_runjobs_warns_once_as_it_starts(redis_server, worker_processes):
    process = worker_processes.start(
        "--burst", "--processes", "2", "--queues", "default", REDIS_URL=redis_server.url
    )
    output = worker_processes.wait(process, timeout=60)
    assert output.count("django_jobs.W010") == 1, output
    assert "maxmemory-policy volatile-lru" in output
