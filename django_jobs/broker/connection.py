"""The process-wide Redis client, built from ``JOBS['REDIS_URL']`` and
``JOBS['REDIS_OPTIONS']`` (TLS, credentials, Sentinel: see servers.py).

With no URL and ``DEBUG`` on, the URL is the project's embedded development Redis,
started here on first use (never at import or during ``check``).

One client (and so one connection pool) per process: redis-py pools are
thread-safe and notice a fork, so threads and child processes may share this.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from redis import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError

from django_jobs.broker import servers
from django_jobs.conf import get_settings

_lock = threading.Lock()
_client: Redis | None = None


# Short enough that a hung Redis surfaces as an error instead of a hang.
SOCKET_TIMEOUT_SECONDS = 15.0
# The longest an idle worker blocks on Redis (BZPOPMIN) before looking again. Every
# event that brings work wakes it sooner (enqueue, retry, recovery, a delayed job
# that comes due, shutdown), so this bounds only what nothing announces; long waits
# keep an idle worker's cost to Redis low. Its connection waits this much longer.
MAX_IDLE_WAIT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 5.0


def client_from_url(
    url: str,
    timeout: float = SOCKET_TIMEOUT_SECONDS,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    options: dict[str, Any] | None = None,
) -> Redis:
    """``options``: validated ``REDIS_OPTIONS`` (see servers.validate)."""
    return servers.new_client(url, options or {}, **client_settings(timeout, connect_timeout))


def client_settings(
    timeout: float = SOCKET_TIMEOUT_SECONDS, connect_timeout: float = CONNECT_TIMEOUT_SECONDS
) -> dict[str, Any]:
    """The connection settings of our clients, sync and asyncio (async_enqueue.py)."""
    return {
        "decode_responses": True,
        # Bytes that are not UTF-8 (written by another program, or a bug) must not
        # make a whole reply unreadable: they come through as lone surrogates, which
        # payload.utf8() spots, so only the job holding them fails (see payload).
        "encoding_errors": "surrogateescape",
        "health_check_interval": 30,
        "socket_timeout": timeout,
        "socket_connect_timeout": connect_timeout,
    }


def resolve_url() -> str:
    """JOBS['REDIS_URL'], else (DEBUG only) the embedded Redis' URL; without either,
    ImproperlyConfigured saying how to set it."""
    url = get_settings().redis_url
    if url:
        return url
    if not django_settings.DEBUG:
        raise ImproperlyConfigured(
            "django-jobs has no Redis to talk to: set JOBS['REDIS_URL'] "
            "(e.g. 'redis://127.0.0.1:6379/0'). The embedded Redis is for DEBUG only."
        )
    from django_jobs import embedded

    return embedded.url()


def probe_broker(timeout: float):
    """A broker on a client of its own whose every wait is at most ``timeout``, for a
    quick look at Redis that must not hang when Redis is away (a system check).
    Close it with ``broker.client.close()``."""
    from django_jobs.broker.api import Broker

    settings = get_settings()
    if not settings.redis_url:
        raise ImproperlyConfigured("JOBS['REDIS_URL'] is not set.")
    client = client_from_url(settings.redis_url, timeout, timeout, settings.redis_options)
    return Broker(client, settings.prefix)


def new_client() -> Redis:
    """A client of the configured Redis with a pool of its own."""
    return client_from_url(resolve_url(), options=get_settings().redis_options)


def get_client() -> Redis:
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = new_client()
    return _client


def reset() -> None:
    """Forget the client (settings changed); the next call builds a new one."""
    global _client, _broker
    with _lock:
        if _broker is not None:
            _broker.wire.close()
            _broker.waits.close()
        if _client is not None:
            _client.close()
        _client = None
        _broker = None


_broker = None


def built_broker():
    """The process-wide broker if it has been built, else None (without building it:
    that may talk to Redis, which an event loop must not wait on)."""
    return _broker


def get_broker():
    """The process-wide :class:`~django_jobs.broker.api.Broker` (scripts loaded once)."""
    global _broker
    if _broker is None:
        from django_jobs.broker.api import Broker

        broker = Broker(get_client(), get_settings().prefix)
        with _lock:
            if _broker is None:
                _broker = broker
    return _broker


def check_access(queues: list[str], worker_id: str) -> None:
    """Fail at start-up, clearly, when Redis refuses our credentials or our ACL user
    may not run what a worker runs. Nothing else is checked here (Redis away,
    loading, refusing writes for now): workers wait for those to pass."""
    problem = access_problem(queues, worker_id)
    if problem:
        raise ImproperlyConfigured(problem)


def access_problem(queues: list[str], worker_id: str) -> str | None:
    """What Redis refuses django-jobs' user (its credentials, or a command a worker
    runs), in one line that shows no password; None when it lets it do all of it,
    or when it cannot tell now (Redis away: a passing state)."""
    from django_jobs.broker.api import Broker

    url = resolve_url()
    broker = None
    try:
        # A Redis Cluster client connects (and may be refused) as it is made.
        broker = Broker(new_client(), get_settings().prefix)
        broker.probe_access(queues, worker_id)
    except AuthenticationError as error:
        return (
            f"Redis at {servers.redacted(url)} refused django-jobs' credentials ({error}): "
            "check the user name and password in JOBS['REDIS_URL'] or JOBS['REDIS_OPTIONS']."
        )
    except NoPermissionError as error:
        prefix = get_settings().prefix
        # Redis 6.2 counts all of CLUSTER as dangerous; the client reads CLUSTER SLOTS.
        slots = " +cluster|slots" if servers.is_cluster(url, get_settings().redis_options) else ""
        return (
            f"Redis at {servers.redacted(url)} does not let django-jobs' user do what a "
            f"worker does ({error}). Grant that user the keys and commands, e.g. "
            f"ACL SETUSER <user> ~{prefix}:* ~{{{prefix}:* ~{{{prefix}}}:* +@all -@dangerous +info"
            f"{slots} (see the Redis servers page of the docs)."
        )
    except RedisError:
        # Redis away, loading, out of memory, short of replicas: passing states
        # that the worker reports itself as it waits them out.
        pass
    finally:
        if broker is not None:
            broker.wire.close()
            broker.waits.close()
            broker.client.close()
    return None
