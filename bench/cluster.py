"""Drain on a Redis Cluster vs a single server, interleaved in one run.

    .venv/bin/python bench/cluster.py [--jobs 20000] [--rounds 3] [--queues 3]
    .venv/bin/python bench/cluster.py --shards 1,3,6 [--jobs 20000] [--rounds 3]

Starts a redis-server and a 3-master Redis Cluster (``redis-cli --cluster
create``) on free loopback ports, bulk-enqueues the same backlog into each (spread
over ``--queues`` queues, whose slots land where they land), drains it with one
``runjobs --burst`` process, and prints jobs/s (from the moment the worker
serves to its exit) and the Redis CPU per job, per node. Servers
are stopped by pid at the end.

With ``--shards``, only the cluster: one queue spread over each shard count in
turn (``QUEUES[q]["shards"]``), to show how its Redis work spreads over the
masters. The busiest master's CPU per job bounds one queue's throughput (a
Redis core is single threaded): at most 1e6 / (its us per job) jobs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from django_jobs.broker.keys import QueueKeys, shard_names

BENCH_DIR = Path(__file__).resolve().parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
ENQUEUE = (
    "import sys, django; django.setup(); from django_jobs import enqueue; "
    "queues = sys.argv[2].split(','); "
    "from djproject.benchapp.jobs import noop; "
    "[noop.using(queue=queues[i % len(queues)]).enqueue_many([(j,) for j in range(i, i + 1000)]) "
    "for i in range(0, int(sys.argv[1]), 1000)]"
)


def free_port() -> int:
    """Below 45000, with the cluster bus port (10000 higher) free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 45000:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def start(directory: Path, *args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        try:
            redis.Redis(port=port).ping()
            return process, port
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit(f"redis-server on {port} did not start")


def cpu_seconds(port: int) -> float:
    info = redis.Redis(port=port).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_seconds(port: int) -> float:
    """Time Redis spent running commands (INFO commandstats), idle work and the
    blocking waits (their time blocked is counted in) left out."""
    stats = redis.Redis(port=port).info("commandstats")
    return (
        sum(
            float(entry["usec"])
            for name, entry in stats.items()
            if not name.startswith(("cmdstat_bzpop", "cmdstat_blpop", "cmdstat_brpop"))
        )
        / 1e6
    )


def run_once(
    url: str, probe_url: str, ports: list[int], jobs: int, queues: list[str], shards: int = 1
) -> tuple[float, list]:
    env = {
        **os.environ,
        "BENCH_REDIS_URL": url,
        "BENCH_PROBE_URL": probe_url,
        "BENCH_QUEUES": json.dumps({queue: {"shards": shards} for queue in queues}),
        "DJANGO_SETTINGS_MODULE": "djproject.settings",
    }
    subprocess.run(
        [sys.executable, "-c", ENQUEUE, str(jobs), ",".join(queues)],
        cwd=BENCH_DIR,
        env=env,
        check=True,
    )
    before = [cpu_seconds(port) for port in ports]
    ran = [command_seconds(port) for port in ports]
    worker = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "djproject" / "manage.py"), "runjobs", "--burst",
         "--queues", ",".join(queues), "--concurrency", "8", "--prefetch", "32"],
        cwd=BENCH_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert worker.stderr is not None
    started = None
    for line in worker.stderr:  # timed from the moment it serves (start-up left out)
        if started is None and "serving queues" in line:
            started = time.perf_counter()
    if worker.wait() != 0 or started is None:
        raise SystemExit(f"runjobs failed on {url}")
    took = time.perf_counter() - started
    per_job = [(cpu_seconds(port) - b) / jobs * 1e6 for port, b in zip(ports, before, strict=True)]
    commands = [
        (command_seconds(port) - b) / jobs * 1e6 for port, b in zip(ports, ran, strict=True)
    ]
    return jobs / took, per_job, commands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queues", type=int, default=3)
    parser.add_argument(
        "--shards", help="shard counts of one queue to compare on the cluster, e.g. 1,3,6"
    )
    args = parser.parse_args()
    queues = [f"q{i}" for i in range(args.queues)]
    shard_counts = [int(n) for n in args.shards.split(",")] if args.shards else []
    directory = Path(tempfile.mkdtemp(prefix="django-jobs-bench-cluster-"))
    (directory / "probe").mkdir()
    processes: list[subprocess.Popen] = []
    try:
        single, single_port = start(directory)
        probe, probe_port = start(directory / "probe")  # the job body's counters
        processes += [single, probe]
        nodes = []
        for index in range(3):
            node_dir = directory / f"node{index}"
            node_dir.mkdir()
            process, port = start(node_dir, "--cluster-enabled", "yes")
            processes.append(process)
            nodes.append(port)
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{p}" for p in nodes), "--cluster-yes"],
            check=True, capture_output=True,
        )  # fmt: skip
        cluster = RedisCluster(host="127.0.0.1", port=nodes[0])
        while redis.Redis(port=nodes[0]).cluster("info")["cluster_state"] != "ok":
            time.sleep(0.1)
        cluster_url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in nodes)
        if shard_counts:
            compare_shards(cluster, cluster_url, nodes, probe_port, shard_counts, args)
            return
        targets = {
            "single": (f"redis://127.0.0.1:{single_port}/0", [single_port]),
            "cluster": (cluster_url, nodes),
        }
        results: dict[str, list[tuple[float, list]]] = {name: [] for name in targets}
        for round_number in range(args.rounds):
            for name, (url, ports) in targets.items():
                redis.Redis(port=single_port).flushall()
                cluster.flushall()
                rate, per_job, _ = run_once(
                    url, f"redis://127.0.0.1:{probe_port}/0", ports, args.jobs, queues
                )
                results[name].append((rate, per_job))
                cpu = ", ".join(f"{value:.0f}" for value in per_job)
                print(f"round {round_number + 1} {name:>8}: {rate:>8,.0f} jobs/s, "
                      f"Redis CPU per node {cpu} us/job", flush=True)  # fmt: skip
        print(f"\nmedian jobs/s ({args.jobs} jobs over {args.queues} queues):")
        base = statistics.median(rate for rate, _ in results["single"])
        for name, samples in results.items():
            median = statistics.median(rate for rate, _ in samples)
            print(f"  {name:>8}: {median:>8,.0f} ({median / base:.2f}x)")
    finally:
        for process in processes:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def compare_shards(
    cluster: RedisCluster,
    url: str,
    nodes: list[int],
    probe_port: int,
    shard_counts: list[int],
    args: argparse.Namespace,
) -> None:
    """One queue over each shard count in turn, rounds interleaved."""
    for shards in shard_counts:
        ports = [
            cluster.get_node_from_key(QueueKeys("bench", name).tag).port
            for name in shard_names("q0", shards)
        ]
        print(f"shards={shards}: shard -> master port {ports}")
    print(f"masters (ports, in this order below): {nodes}")
    results: dict[int, list[tuple[float, list, list]]] = {n: [] for n in shard_counts}
    for round_number in range(args.rounds):
        for shards in shard_counts:
            cluster.flushall()
            result = run_once(
                url, f"redis://127.0.0.1:{probe_port}/0", nodes, args.jobs, ["q0"], shards
            )
            results[shards].append(result)
            rate, cpu, commands = result
            print(f"round {round_number + 1} shards={shards}: {rate:>8,.0f} jobs/s, Redis CPU "
                  f"per master {', '.join(f'{v:.1f}' for v in cpu)} us/job, command time "
                  f"{', '.join(f'{v:.1f}' for v in commands)} us/job", flush=True)  # fmt: skip
    print(f"\nmedians over {args.rounds} rounds ({args.jobs} jobs, one queue):")
    for shards, samples in results.items():
        cpu = [statistics.median(s[1][i] for s in samples) for i in range(len(nodes))]
        commands = [statistics.median(s[2][i] for s in samples) for i in range(len(nodes))]
        print(
            f"  shards={shards}: CPU per master {', '.join(f'{v:.1f}' for v in cpu)} us/job "
            f"(busiest {max(cpu):.1f} -> one queue's Redis ceiling {1e6 / max(cpu):,.0f} "
            f"jobs/s); command time {', '.join(f'{v:.1f}' for v in commands)} us/job "
            f"(busiest {max(commands):.1f}); drain "
            f"{statistics.median(s[0] for s in samples):,.0f} jobs/s (worker-bound here)"
        )


if __name__ == "__main__":
    main()
