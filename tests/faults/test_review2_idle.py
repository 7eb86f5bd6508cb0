"""An idle worker on a single server costs Redis at most one round trip a second
(measured on a private redis-server with MONITOR; commands a script runs, and the
commands of one pipeline, are one round trip)."""

from __future__ import annotations

import re
import socket
import time
from collections import Counter
from urllib.parse import urlparse

import pytest
import redis

from tests.helpers import poll

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.redis_only]

WINDOW_SECONDS = 20.0
LINE = re.compile(r'\+([0-9.]+) \[\d+ ([^\]]+)\] "([^"]+)"')


def monitor(url: str, seconds: float) -> tuple[int, Counter]:
    """Round trips and commands sent by clients during ``seconds`` (a measurement
    window, not a wait for a result)."""
    address = urlparse(url)
    sock = socket.create_connection((address.hostname, address.port))
    sock.sendall(b"MONITOR\r\n")
    sock.settimeout(0.5)
    seen, end = b"", time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            seen += sock.recv(65536)
        except TimeoutError:
            continue
    sock.close()
    commands: Counter = Counter()
    trips, last = 0, {}
    for line in seen.decode(errors="replace").split("\r\n"):
        match = LINE.match(line)
        if not match or match.group(2) == "lua":
            continue
        at, client = float(match.group(1)), match.group(2)
        commands[match.group(3).lower()] += 1
        trips += client not in last or at - last[client] > 0.002
        last[client] = at
    return trips, commands


def test_an_idle_worker_costs_at_most_one_round_trip_a_second(private_redis, worker_processes):
    client = redis.Redis.from_url(private_redis.url)
    worker = worker_processes.start("--queues", "default,other", "--concurrency", "2")
    poll(lambda: client.info("commandstats").get("cmdstat_evalsha"), timeout=60)
    trips, commands = monitor(private_redis.url, WINDOW_SECONDS)
    assert worker.poll() is None, worker_processes.output()
    assert trips <= WINDOW_SECONDS, commands
