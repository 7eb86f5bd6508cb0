"""A/B drains: django-jobs checkouts and worker settings, interleaved in one run.

    .venv/bin/python bench/ab.py [--jobs 20000] [--rounds 3] \
        [--checkout NAME=PATH ...] [--setting NAME="--concurrency 8 --prefetch 32" ...] \
        [--job NAME=keyed]

Every (checkout, setting) pair drains the same bulk-enqueued backlog once per
round, in turn, on one private Redis, so a slow minute of this shared machine
hurts every pair alike. A checkout is a directory holding a ``django_jobs``
package (a ``git worktree`` of another commit, say); the default is this
working tree. Prints the median first->last jobs/s per pair, the ratio to the
first pair, and worker CPU per job. Lost or duplicated jobs fail the run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import redis
from common import BENCH_DIR, CACHE_DIR, Context, PrivateRedis
from systems import djjobs

ENQUEUE = (
    "import os, sys; from common import Context; from systems import djjobs; "
    "djjobs.setup(Context(0, os.environ['BENCH_REDIS_URL'], None, 0, [], [])); "
    "djjobs.enqueue_bulk(int(sys.argv[1]), 1000)"
)
DEFAULT_SETTINGS = {"x2_c8_p32": djjobs.DRAIN_SETTINGS["x2_c8_p32"]}


def pairs(
    parser: argparse.ArgumentParser, flag: str, option: list[str], default: dict[str, str]
) -> dict[str, str]:
    """NAME=VALUE items by name. Split at the first ``=`` only, so a value may hold
    ``=``, spaces and quotes (``--setting "x2=--processes 2 --prefetch=32"``); an
    item without a name fails loudly rather than being taken apart wrongly."""
    named: dict[str, str] = {}
    for item in option:
        name, sep, value = item.partition("=")
        if not sep or not name or name.startswith("-") or name in named:
            parser.error(f"{flag} {item!r}: expected a new NAME=VALUE")
        named[name] = value
    return named or default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checkout", action="append", default=[], help="NAME=PATH")
    parser.add_argument("--setting", action="append", default=[], help='NAME="runjobs options"')
    parser.add_argument(
        "--job", action="append", default=[], help="NAME=JOB: a checkout drains JOB (keyed)"
    )
    args = parser.parse_args()
    job_of = pairs(parser, "--job", args.job, {})
    CACHE_DIR.mkdir(exist_ok=True)
    here = str(Path(__file__).resolve().parents[1])
    checkouts = pairs(parser, "--checkout", args.checkout, {"this": here})
    settings = {
        name: shlex.split(options)
        for name, options in pairs(parser, "--setting", args.setting, {}).items()
    } or DEFAULT_SETTINGS
    rates: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    python_path = os.environ.get("PYTHONPATH", "")
    with PrivateRedis() as server:
        client = redis.Redis.from_url(server.url)
        ctx = Context(args.jobs, server.url, client, 1000, [], [], log=lambda *a: None)
        djjobs.setup(ctx)
        for round_number in range(args.rounds):
            for checkout, path in checkouts.items():
                for name, setting in settings.items():
                    djjobs._fresh(ctx)
                    os.environ["BENCH_JOB"] = job_of.get(checkout, "noop")
                    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [path, python_path]))
                    # The checkout's own code enqueues too: its Redis layout may differ.
                    subprocess.run(
                        [sys.executable, "-c", ENQUEUE, str(args.jobs)],
                        cwd=BENCH_DIR,
                        env={**os.environ, "BENCH_REDIS_URL": server.url},
                        check=True,
                    )
                    extra = djjobs.drain(ctx, f"ab-{checkout}-{name}", setting)
                    os.environ["PYTHONPATH"] = python_path
                    if extra["lost"] or extra["duplicates"] or extra["exit_code"]:
                        raise SystemExit(f"{checkout} {name}: {extra}")
                    key = (checkout, name)
                    rates.setdefault(key, []).append(extra["active_rate"])
                    cpu.setdefault(key, []).append(extra["worker_cpu_us_per_job"])
                    print(
                        f"round {round_number + 1} {checkout:>10} {name:>12}: "
                        f"{extra['active_rate']:>8,.0f} jobs/s, "
                        f"worker CPU {extra['worker_cpu_us_per_job']:.0f} us/job",
                        flush=True,
                    )
    baseline = statistics.median(next(iter(rates.values())))
    print("\nmedian first->last jobs/s (ratio to the first pair), worker CPU us/job:")
    for (checkout, name), samples in rates.items():
        median = statistics.median(samples)
        print(
            f"  {checkout:>10} {name:>12}: {median:>8,.0f} ({median / baseline:.2f}x)  "
            f"[{min(samples):,.0f}..{max(samples):,.0f}]  "
            f"cpu {statistics.median(cpu[checkout, name]):.0f}"
        )


if __name__ == "__main__":
    main()
