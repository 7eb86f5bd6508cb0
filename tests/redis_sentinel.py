"""Redis Sentinel the way users run it: a master, a replica and three sentinels,
started by a test on free loopback ports, each stopped by its pid."""

from __future__ import annotations

from tests.helpers import poll
from tests.redis_servers import Server
from tests.services import REDIS_SERVER


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
