"""Redis memory of per-key lanes (limit_by): what one parked key costs.

    .venv/bin/python bench/lanes_memory.py [--keys 10000]

On a private Redis: enqueues one job for each of N keys of a job with
``concurrency_limit=1`` and fetches it (each key now holds its one slot), then
enqueues one more job per key and fetches again, so every key is parked waiting
for its slot. Prints ``used_memory`` deltas per key, next to the same number of
plain (unkeyed) waiting jobs for comparison, and MEMORY USAGE of one key's keys.
"""

from __future__ import annotations

import argparse
import os

import redis
from common import Context, PrivateRedis
from systems import djjobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    n = parser.parse_args().keys
    os.environ["BENCH_JOB"] = "keyed"
    with PrivateRedis() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        djjobs.setup(Context(0, server.url, client, 0, [], []))
        from djproject.benchapp.jobs import noop
        from djproject.benchapp.keyed_jobs import keyed

        from django_jobs.broker.connection import get_broker
        from django_jobs.conf import get_settings
        from django_jobs.limits import fetch_limits

        broker = get_broker()
        limits = fetch_limits("bench", get_settings())
        one_per_key = keyed.using(limit_by=lambda i: f"customer:{i}")

        def used() -> int:
            return int(client.info("memory")["used_memory"])

        start = used()
        noop.enqueue_many([(i,) for i in range(n)])
        plain = used() - start
        broker.purge("bench", 0)
        client.flushdb()

        start = used()
        one_per_key.enqueue_many([(i,) for i in range(n)])
        while broker.fetch("bench", "w", 600_000, 1000, limits).jobs:
            pass
        running = used()
        one_per_key.enqueue_many([(i,) for i in range(n)])
        k = broker.keys("bench")
        parked = 0
        while parked < n:  # each fetch parks up to 1,000 keys at their limit
            broker.fetch("bench", "w", 600_000, 1000, limits)
            parked = client.zcount(k.key_lanes, "(0", "+inf")
        after = used()
        lane = "benchapp.keyed:customer:7"
        usage = {
            "keys zset (all lanes)": client.memory_usage(k.key_lanes),
            "one lane (1 job)": client.memory_usage(k.lane(lane)),
            "one slot set": client.memory_usage(k.lane_running(lane)),
        }
        print(f"{n:,} keys, {parked:,} parked waiting for their slot")
        print(f"plain waiting job:            {plain / n:7.0f} B each (list entry + job hash)")
        print(f"keyed job running (its slot): {(running - start) / n:7.0f} B per key")
        print(f"keyed job parked behind it:   {(after - running) / n:7.0f} B per key")
        print(f"  of which the parked lane:   {(after - running - plain) / n:7.0f} B per key")
        for what, size in usage.items():
            print(f"  MEMORY USAGE {what}: {size} B")


if __name__ == "__main__":
    main()
