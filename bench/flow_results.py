"""What a group's `then` costs at its end: the last member's ack and the callback.

    .venv/bin/python bench/flow_results.py [--members 100000] [--result-bytes 50]

Starts its own ``redis-server --save "" --appendonly no`` on a free port, enqueues
``group(member x N).then(callback)``, ends the members by the broker's own fetch and
ack (1,000 per round trip), then times the last member's ack alone (its wall time
and the script time Redis counted, INFO commandstats), reads how much Redis memory
it added and how large the callback's stored arguments are, and finally runs the
callback in a fresh burst worker process that reads every result and reports its
peak RSS. Run it with another checkout on PYTHONPATH to compare versions.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PrivateRedis

PREFIX = "flowbench"


def setup(redis_url: str, db_path: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_jobs"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db_path}},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        JOBS={"REDIS_URL": redis_url, "PREFIX": PREFIX},
    )
    django.setup()
    from django_jobs import job

    @job(name="bench.member")
    def member(n: int) -> int:
        return n

    @job(name="bench.callback")
    def callback(results) -> int:
        total = sum(len(value) for value in results)
        peak_kib = high_water_kib()
        from django_jobs.broker.connection import get_broker

        report = json.dumps([len(results), total, peak_kib])
        get_broker().client.set(f"{PREFIX}:bench:callback", report)
        return total


def high_water_kib() -> int:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_callback(redis_url: str, db_path: str) -> None:
    setup(redis_url, db_path)
    from django_jobs.worker.runner import Worker, WorkerOptions

    before = high_water_kib()
    print(json.dumps({"rss_before_kib": before}))
    Worker(WorkerOptions(queues=["default"], concurrency=1, burst=True)).run()


def measure(members: int, result_bytes: int, redis_url: str, db_path: str) -> dict:
    setup(redis_url, db_path)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django_jobs import group
    from django_jobs.broker.connection import get_broker
    from django_jobs.registry import get_job

    broker = get_broker()
    client = broker.client
    started = time.perf_counter()
    flow = (
        group(*[get_job("bench.member").s(n) for n in range(members)])
        .then(get_job("bench.callback").s())
        .enqueue()
    )
    enqueue_s = time.perf_counter() - started
    pad = "x" * max(0, result_bytes - 10)
    done = 0
    last = None
    while done < members:
        jobs = broker.fetch("default", "w1", 600_000, 1000).jobs
        if not jobs:
            break
        part = []
        for fetched in jobs:
            if done + len(part) == members - 1:
                last = fetched
                continue
            part.append((fetched, json.dumps(f"{pad}{fetched.id[-8:]}"), None))
        if part:
            broker.ack_many(part, 86400)
        done += len(part) + (1 if last is not None and last in jobs else 0)
    assert last is not None, "the last member was not fetched"
    stats = client.info("commandstats")
    usec_before = sum(v["usec"] for k, v in stats.items() if k.startswith("cmdstat_evalsha"))
    memory_before = client.info("memory")
    started = time.perf_counter()
    broker.ack(last, json.dumps(f"{pad}{last.id[-8:]}"), None, 86400)
    ack_ms = (time.perf_counter() - started) * 1000
    stats = client.info("commandstats")
    usec_after = sum(v["usec"] for k, v in stats.items() if k.startswith("cmdstat_evalsha"))
    memory_after = client.info("memory")
    added_kib = (memory_after["used_memory"] - memory_before["used_memory"]) // 1024
    callback_key = broker.keys("default").job(f"{flow.id}-1-2")
    args_bytes = client.hstrlen(callback_key, "args")
    child = subprocess.run(
        [sys.executable, __file__, "--run-callback", "--redis-url", redis_url, "--db", db_path],
        capture_output=True,
        text=True,
        check=True,
    )
    count, characters, peak_kib = json.loads(client.get(f"{PREFIX}:bench:callback"))
    rss_before = json.loads(child.stdout.splitlines()[0])["rss_before_kib"]
    return {
        "members": members,
        "result_bytes": result_bytes,
        "enqueue_s": round(enqueue_s, 2),
        "last_ack_ms": round(ack_ms, 1),
        "last_ack_script_ms": round((usec_after - usec_before) / 1000, 1),
        "memory_added_by_last_ack_kib": added_kib,
        "lua_memory_kib": memory_after.get("used_memory_lua", 0) // 1024,
        "callback_args_bytes": args_bytes,
        "flow_hash_kib": client.memory_usage(flow.key) // 1024,
        "callback_results": count,
        "callback_result_characters": characters,
        "callback_worker_rss_before_kib": rss_before,
        "callback_worker_peak_rss_kib": peak_kib,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--result-bytes", type=int, default=50)
    parser.add_argument("--run-callback", action="store_true")
    parser.add_argument("--redis-url")
    parser.add_argument("--db")
    options = parser.parse_args()
    if options.run_callback:
        run_callback(options.redis_url, options.db)
        return
    directory = tempfile.mkdtemp(prefix="flowbench")
    with PrivateRedis() as server:
        db_path = str(Path(directory) / "bench.sqlite3")
        print(json.dumps(measure(options.members, options.result_bytes, server.url, db_path)))


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
