"""Redis Cluster the way users run it (made with ``redis-cli --cluster create``,
plain or TLS only), started by a test on free loopback ports, each node stopped by
its pid; and the moves a test makes on it (a slot resharded, a master's replica)."""

from __future__ import annotations

import itertools
import random
import socket
import subprocess
import time
from typing import Any

from redis.crc import key_slot

from django_jobs.broker.keys import QueueKeys
from tests.helpers import poll
from tests.redis_servers import REDIS_CLI, Certificates, Server
from tests.services import REDIS_SERVER


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
