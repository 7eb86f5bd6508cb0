"""Private servers for fault tests: each on a free port, in its own directory,
stopped by pid, so a test can kill or restart it without disturbing anything else."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import redis

from tests.helpers import poll

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server of our own; ``aof=True`` turns on appendonly with fsync everysec;
    ``password`` requires it (requirepass); ``options`` are more redis-server arguments
    (``"--maxmemory-policy", "allkeys-lru"``)."""

    def __init__(
        self, aof: bool = False, options: tuple[str, ...] = (), password: str | None = None
    ) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="django-jobs-redis-"))
        self.aof = aof
        self.options = options
        self.password = password
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.url_with(self.password)

    def url_with(self, password: str | None) -> str:
        credentials = f":{password}@" if password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        try:
            return redis.Redis(port=self.port, password=self.password, socket_timeout=0.5).ping()
        except redis.RedisError:
            return False

    def start(self) -> RedisServer:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec"]
            if self.aof
            else ["--appendonly", "no"]
        )
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.dir),
                *persistence,
                *self.options,
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Generous: loading an AOF on a loaded machine (the chaos and soak runs) is slow.
        poll(self._answers, timeout=60, describe=lambda: f"redis-server on port {self.port}")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (SIGTERM: a clean shutdown that flushes the AOF)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def _postgres_bin(name: str) -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else shutil.which(name)


class PostgresServer:
    """A PostgreSQL cluster of our own (trust auth) that a test can stop and start.

    PostgreSQL refuses to run as root, so as root the cluster runs as the
    ``postgres`` system user.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="django-jobs-pg-"))
        self.data = self.dir / "data"
        self.initdb = _postgres_bin("initdb")
        self.pg_ctl = _postgres_bin("pg_ctl")

    @classmethod
    def existing(cls, port: int, directory: str) -> PostgresServer:
        """A cluster another process initialised and started (chaos/run.py), for a
        test to stop and start."""
        server = cls()
        shutil.rmtree(server.dir, ignore_errors=True)
        server.port, server.dir = port, Path(directory)
        server.data = server.dir / "data"
        return server

    @property
    def available(self) -> bool:
        return bool(self.initdb and self.pg_ctl)

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    def init(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self

    def start(self) -> None:
        self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-w",
            "-l",
            str(self.dir / "log"),
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self) -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-w", "-m", "fast", "stop")

    def cleanup(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop()
            except subprocess.SubprocessError:
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)
