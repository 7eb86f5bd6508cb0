"""Which Redis to talk to, and how: ``JOBS['REDIS_URL']`` plus ``JOBS['REDIS_OPTIONS']``.

URLs: ``redis://``, ``rediss://`` (TLS), ``unix://`` as redis-py reads them, and
``redis+sentinel://[user:password@]host:port,host:port/service_name[/db]`` (or
``rediss+sentinel://`` for TLS to the data nodes): the client asks the sentinels
for the current master of ``service_name`` and asks again after a failover.
``redis+cluster://[user:password@]host:port[,host:port]/`` (or ``rediss+cluster://``),
or any ``redis://`` / ``rediss://`` URL with ``REDIS_OPTIONS = {"cluster": True}``:
a Redis Cluster, found from those nodes (each queue lives in one hash slot).

``REDIS_OPTIONS`` holds what does not fit a URL (certificate files, a password
kept out of the URL, how to talk to the sentinels). Unknown options are an error,
never silently ignored. Every URL shown to people goes through :func:`redacted`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlparse

from redis import Redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import Connection
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.sentinel import Sentinel, SentinelConnectionPool

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
TLS_SCHEMES = ("rediss", "rediss+sentinel", "rediss+cluster")
SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_PORT = 6379
CERT_REQS = ("required", "optional", "none")
# How often a process asks the sentinels where the master is (see MasterWatch).
MASTER_CHECK_SECONDS = 1.0

# name -> what it must be (for the error message) and a test for it
_STRING = ("a string", lambda value: isinstance(value, str) and bool(value))
_BOOL = ("True or False", lambda value: isinstance(value, bool))
TLS_OPTIONS = {
    "ssl_ca_certs": _STRING,  # the CA bundle that signed the server's certificate
    "ssl_ca_path": _STRING,
    "ssl_certfile": _STRING,  # a client certificate, for servers with tls-auth-clients
    "ssl_keyfile": _STRING,
    "ssl_password": _STRING,  # the passphrase of ssl_keyfile
    "ssl_cert_reqs": (f"one of {', '.join(CERT_REQS)}", lambda value: value in CERT_REQS),
    "ssl_check_hostname": _BOOL,
}
AUTH_OPTIONS = {"username": _STRING, "password": _STRING}
SENTINEL_KWARGS = {**AUTH_OPTIONS, "ssl": _BOOL, **TLS_OPTIONS}
OPTIONS = {
    **TLS_OPTIONS,
    **AUTH_OPTIONS,
    "sentinel_kwargs": ("a dict", lambda value: isinstance(value, dict)),
    "cluster": _BOOL,  # a redis:// or rediss:// URL names a node of a Redis Cluster
}


def redacted(url: str) -> str:
    """``url`` with any password (in the user part or the query) replaced by ``***``:
    the one way a Redis URL is shown in messages, logs and pages."""
    parts = urlparse(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}")
    if "password" in parts.query:
        pairs = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)]
        parts = parts._replace(query=urlencode(pairs, safe="*"))
    return parts.geturl() if parts != urlparse(url) else url


def validate(url: str | None, options: Any) -> dict[str, Any]:
    """``REDIS_OPTIONS`` checked against the URL; raises ValueError saying what to fix."""
    if options is None:
        options = {}  # the URL is still checked
    if not isinstance(options, dict):
        raise ValueError(f"JOBS['REDIS_OPTIONS'] must be a dict, got {type(options).__name__}.")
    _check_names("JOBS['REDIS_OPTIONS']", options, OPTIONS)
    scheme = urlparse(url or "").scheme
    tls = sorted(set(options) & set(TLS_OPTIONS))
    if tls and scheme not in TLS_SCHEMES:
        raise ValueError(
            f"JOBS['REDIS_OPTIONS'] has TLS option(s) {', '.join(tls)} but JOBS['REDIS_URL'] "
            f"is not a TLS URL: use rediss:// (or rediss+sentinel://, rediss+cluster://)."
        )
    if options.get("cluster") and scheme not in ("redis", "rediss", *CLUSTER_SCHEMES):
        raise ValueError(
            "JOBS['REDIS_OPTIONS']['cluster'] is for a redis:// or rediss:// REDIS_URL "
            "naming a node of the cluster."
        )
    if "sentinel_kwargs" in options:
        if scheme not in SENTINEL_SCHEMES:
            raise ValueError(
                "JOBS['REDIS_OPTIONS']['sentinel_kwargs'] is only for a "
                "redis+sentinel:// REDIS_URL."
            )
        _check_names(
            "JOBS['REDIS_OPTIONS']['sentinel_kwargs']", options["sentinel_kwargs"], SENTINEL_KWARGS
        )
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url or "")
    if scheme in CLUSTER_SCHEMES:
        parse_cluster_url(url or "")
    return dict(options)


def _check_names(where: str, options: dict[str, Any], known: dict[str, tuple]) -> None:
    unknown = sorted(str(name) for name in set(options) - set(known))
    if unknown:
        raise ValueError(
            f"{where} has unknown option(s) {', '.join(unknown)}; known options are "
            f"{', '.join(sorted(known))}."
        )
    for name, value in options.items():
        expected, is_valid = known[name]
        if not is_valid(value):
            shown = "***" if "password" in name else repr(value)
            raise ValueError(f"{where}[{name!r}] must be {expected}, got {shown}.")


@dataclass(frozen=True)
class SentinelURL:
    sentinels: list[tuple[str, int]]
    service_name: str
    db: int
    username: str | None
    password: str | None
    tls: bool


def parse_sentinel_url(url: str) -> SentinelURL:
    """``redis+sentinel://[user:password@]host[:port],host[:port]/service_name[/db]``."""
    parts = urlparse(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if at else ("", "", "")
    path = [segment for segment in parts.path.split("/") if segment]
    problem = None
    if not hosts:
        problem = "it names no sentinel"
    elif not path or len(path) > 2:
        problem = "it needs /service_name or /service_name/db after the sentinels"
    elif len(path) == 2 and not path[1].isdigit():
        problem = f"the database {path[1]!r} is not a number"
    sentinels, bad_host = _host_ports(hosts, DEFAULT_SENTINEL_PORT)
    problem = problem or bad_host
    if problem:
        raise ValueError(
            f"JOBS['REDIS_URL'] = {redacted(url)!r} is not a Sentinel URL: {problem}. Use "
            f"redis+sentinel://host:26379,host:26379/service_name/0."
        )
    return SentinelURL(
        sentinels=sentinels,
        service_name=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=parts.scheme == "rediss+sentinel",
    )


@dataclass(frozen=True)
class ClusterURL:
    nodes: list[tuple[str, int]]
    username: str | None
    password: str | None
    tls: bool


def parse_cluster_url(url: str) -> ClusterURL:
    """``redis+cluster://[user:password@]host[:port][,host[:port]]/``: any live node
    is enough to find the others; several are named so start-up survives one down."""
    parts = urlparse(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if at else ("", "", "")
    problem = None
    if not hosts:
        problem = "it names no node"
    elif parts.path.strip("/") not in ("", "0"):
        problem = "a Redis Cluster has only database 0"
    nodes, bad_host = _host_ports(hosts, DEFAULT_PORT)
    problem = problem or bad_host
    if problem:
        raise ValueError(
            f"JOBS['REDIS_URL'] = {redacted(url)!r} is not a Redis Cluster URL: {problem}. "
            f"Use redis+cluster://host:6379,host:6379/."
        )
    return ClusterURL(
        nodes=nodes,
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=parts.scheme.startswith("rediss"),
    )


def _host_ports(hosts: str, default_port: int) -> tuple[list[tuple[str, int]], str | None]:
    """``host[:port],...`` of a Sentinel or Cluster URL, and what is wrong with the
    first entry that is not host:port (None if all are)."""
    found: list[tuple[str, int]] = []
    problem = None
    for host in hosts.split(",") if hosts else []:
        name, port = _host_port(host, default_port)
        if port is None:
            problem = problem or f"{host!r} is not host:port"
            continue
        found.append((name, port))
    return found, problem


def _host_port(host: str, default_port: int) -> tuple[str, int | None]:
    """ "host:port", "host" (the default port) or "[v6]:port"; port None if not a number."""
    if host.endswith("]") or ":" not in host:
        name, port = host, str(default_port)
    else:
        name, _, port = host.rpartition(":")
    if not port.isdigit() or not name:
        return name, None
    return name.strip("[]"), int(port)


def is_cluster(url: str, options: dict[str, Any]) -> bool:
    return urlparse(url).scheme in CLUSTER_SCHEMES or bool(options.get("cluster"))


def new_client(url: str, options: dict[str, Any], **connection: Any) -> Redis:
    """A client of ``url`` with ``options`` and the caller's ``connection`` settings
    (timeouts, decoding). For Sentinel, its pool's connections find the master in
    ``connect()``, so one copied from the pool does too once that is called (wire.py).
    Credentials in the URL win over those in ``options``, as redis-py's from_url does."""
    options = dict(options)
    sentinel_kwargs = options.pop("sentinel_kwargs", None)
    if is_cluster(url, options):
        return _cluster_client(url, options, connection)
    if urlparse(url).scheme not in SENTINEL_SCHEMES:
        return Redis.from_url(url, **connection, **options)
    found = parse_sentinel_url(url)
    timeouts = {key: value for key, value in connection.items() if key.startswith("socket_")}
    sentinel = Sentinel(
        found.sentinels,
        sentinel_kwargs={**timeouts, **(sentinel_kwargs or {})},
    )
    in_url = {"username": found.username, "password": found.password}
    return sentinel.master_for(
        found.service_name,
        db=found.db,
        ssl=found.tls,
        **{**connection, **options, **{key: value for key, value in in_url.items() if value}},
    )


def _cluster_client(url: str, options: dict[str, Any], connection: dict[str, Any]) -> Redis:
    """A RedisCluster client (typed as Redis: it answers the same commands; wire.py
    routes its own calls by slot). Credentials in the URL win over ``options``."""
    options.pop("cluster", None)
    if urlparse(url).scheme in CLUSTER_SCHEMES:
        found = parse_cluster_url(url)
        nodes, tls = found.nodes, found.tls
        in_url = {"username": found.username, "password": found.password}
    else:
        parts = urlparse(url)
        nodes = [(parts.hostname or "localhost", parts.port or DEFAULT_PORT)]
        tls = parts.scheme == "rediss"
        in_url = {
            "username": unquote(parts.username or "") or None,
            "password": unquote(parts.password or "") or None,
        }
    try:
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            ssl=tls,
            **{**connection, **options, **{key: value for key, value in in_url.items() if value}},
        )
    except RedisClusterException as error:
        # Not a RedisError: callers that fall back when Redis is away (enqueue to
        # the outbox, a worker waiting for Redis) must see one, and refused
        # credentials must stay an AuthenticationError (runjobs stops on it).
        cause = error.__cause__ or error.__context__
        if isinstance(cause, (AuthenticationError, NoPermissionError)):
            raise cause from None
        raise RedisConnectionError(str(error)) from error
    return client  # type: ignore[return-value]


class MasterWatch:
    """Tells when a kept-open connection of a Sentinel-managed client talks to a
    master that is no longer the master.

    After a failover the old master goes on taking writes until the sentinels turn
    it into a replica (about ten seconds when it is still up), and it throws them
    away as it syncs from the new one. New connections ask the sentinels first, but
    open ones would keep writing there: so the sentinels are asked again at most
    once a second, and a connection to the old address is dropped before use.
    """

    def __init__(self, pool: SentinelConnectionPool) -> None:
        self._pool = pool
        self._next_check = 0.0

    @classmethod
    def of(cls, client: Redis) -> MasterWatch | None:
        pool = client.connection_pool
        return cls(pool) if isinstance(pool, SentinelConnectionPool) else None

    def is_stale(self, connection: Connection) -> bool:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + MASTER_CHECK_SECONDS
            # Sentinels away: keep using the master we know.
            with contextlib.suppress(RedisError, OSError):
                self._pool.get_master_address()  # also drops the pool's idle connections
        address = self._pool.master_address
        return address is not None and (connection.host, connection.port) != address
