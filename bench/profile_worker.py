"""Profile the django-jobs worker in-process with cProfile on every thread.

    .venv/bin/python bench/profile_worker.py [--jobs 5000] [--concurrency 1] [--top 30]

Starts a private redis-server, bulk-enqueues ``--jobs`` bench jobs, runs
``Worker(WorkerOptions(queues=["bench"], concurrency=N, burst=True)).run()`` with
a cProfile profiler in the main (fetch) thread and in each thread the worker
starts, and prints the merged statistics (sorted by own time and by cumulative
time) with calls per job, so "how many X per job" is exact. cProfile slows
Python down by roughly 2x, so use it for where time goes and how often things
are called, not for jobs/s (use run.py, or run.py --py-spy, for that).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import threading
import time

import redis
from common import CACHE_DIR, Context, PrivateRedis, count_outcome, reset_probe
from systems import djjobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--prefetch", type=int, default=0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--save", help="Also dump the merged stats to this .prof file.")
    args = parser.parse_args()
    CACHE_DIR.mkdir(exist_ok=True)

    with PrivateRedis() as server:
        client = redis.Redis.from_url(server.url)
        ctx = Context(
            jobs=args.jobs,
            redis_url=server.url,
            client=client,
            chunk=1000,
            concurrencies=[],
            raw_processes=[],
        )
        djjobs.setup(ctx)
        client.flushdb()
        reset_probe(client)
        djjobs.enqueue_bulk(args.jobs, 1000)

        from django_jobs.worker.runner import Worker, WorkerOptions

        profiles: list[cProfile.Profile] = []
        lock = threading.Lock()

        def start_in_thread(frame, event, arg):  # runs once, first event of a new thread
            profile = cProfile.Profile()
            with lock:
                profiles.append(profile)
            profile.enable()  # replaces this hook for the rest of the thread

        main_profile = cProfile.Profile()
        worker = Worker(
            WorkerOptions(
                queues=[djjobs.QUEUE],
                concurrency=args.concurrency,
                prefetch=args.prefetch,
                burst=True,
            )
        )
        threading.setprofile(start_in_thread)
        started = time.perf_counter()
        main_profile.enable()
        worker.run()
        main_profile.disable()
        elapsed = time.perf_counter() - started
        threading.setprofile(None)

        outcome = count_outcome(client, args.jobs)
        print(
            f"{args.jobs} jobs, concurrency {args.concurrency}: {elapsed:.2f}s under cProfile "
            f"({args.jobs / elapsed:,.0f} jobs/s), lost={outcome['lost']} "
            f"dup={outcome['duplicates']}, {len(profiles)} profiled thread(s)\n"
        )
        stats = pstats.Stats(main_profile, stream=sys.stdout)
        for profile in profiles:
            stats.add(profile)
        if args.save:
            stats.dump_stats(args.save)
        for key in ("tottime", "cumulative"):
            buffer = io.StringIO()
            stats.stream = buffer
            stats.sort_stats(key).print_stats(args.top)
            print(f"=== sorted by {key} (ncalls / {args.jobs} jobs = calls per job) ===")
            print(buffer.getvalue().split("\n\n", 2)[-1])
        client.close()


if __name__ == "__main__":
    main()
