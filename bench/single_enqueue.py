"""Single enqueue, interleaved: a bare redis-py LPUSH loop and ``noop.enqueue()``.

    .venv/bin/python bench/single_enqueue.py [--jobs 3000] [--rounds 7]

Single-call rates swing by up to 40% from one minute to the next on a shared
machine, so ``run.py``'s one sample each is a weak ratio. This alternates the two
loops, round by round, on one private Redis and prints both medians and the
ratio of each round.
"""

from __future__ import annotations

import argparse
import statistics
import time

import redis
from common import CACHE_DIR, Context, PrivateRedis
from systems import djjobs, raw


def rate(jobs: int, call) -> float:
    started = time.perf_counter()
    for index in range(jobs):
        call(index)
    return jobs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    CACHE_DIR.mkdir(exist_ok=True)
    with PrivateRedis() as server:
        client = redis.Redis.from_url(server.url)
        djjobs.setup(Context(args.jobs, server.url, client, 1000, [], [], log=lambda *a: None))
        noop = djjobs._noop()
        bare, ours = [], []
        for _ in range(args.rounds):
            client.flushdb()
            noop.enqueue(0)  # scripts loaded, connection open
            bare.append(rate(args.jobs, lambda i: client.lpush(raw.QUEUE, raw.payload(i))))
            ours.append(rate(args.jobs, noop.enqueue))
    ratios = [round(o / b, 2) for o, b in zip(ours, bare, strict=True)]
    print(f"bare LPUSH loop  median {statistics.median(bare):,.0f}/s")
    print(f"noop.enqueue()   median {statistics.median(ours):,.0f}/s")
    print(f"ratio per round  {ratios} (median {statistics.median(ratios):.2f})")


if __name__ == "__main__":
    main()
