"""The soak run (not in CI): producers at a steady rate, worker processes, random
faults, for an hour; worker RSS, Redis memory and enqueue-to-start latency sampled
every 10 s and plotted. Flat is the goal.

    .venv/bin/python chaos/soak.py --minutes 60 --rate 1000 --out /tmp/soak [--seed N]

On a private redis-server with AOF and a SQLite file database (for the dead
letters), ``--producers`` processes enqueue ``--rate`` jobs/s between them in
batches; two workers serve them (``--processes 2`` and a threaded one, both with
prefetch). Every 20-40 s the seeded controller of the chaos run
(tests/faults/chaos.py) injects one fault: kill -9 a worker or a worker's child,
SIGSTOP one past its lease, SIGTERM one, restart Redis, CLIENT PAUSE. Finished jobs
are kept 60 s (``RESULT_TTL``), so Redis holds a steady window, not the whole hour.

``--out`` gets samples.jsonl (one line per 10 s), summary.json, the worker logs and
soak.png (chaos/soak_plot.py, which can redraw it from samples.jsonl).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FAULTS = {
    "kill -9 worker": 2,
    "kill -9 worker child": 2,
    "SIGSTOP past lease": 2,
    "SIGTERM worker": 2,
    "restart Redis": 1,
    "CLIENT PAUSE": 2,
}
WORKER_KINDS = (
    ("--processes", "2", "--concurrency", "4"),
    ("--concurrency", "8"),
)
SAMPLE_SECONDS = 10.0
RESULT_TTL = 60
LEASE = 5.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--rate", type=float, default=1000, help="Jobs/s, all producers.")
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--fault-every", type=float, nargs=2, default=(20.0, 40.0))
    parser.add_argument("--prefetch", type=int, default=16, help="Each worker's --prefetch.")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def percentile(values: list[int], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] / 1000  # ms


def bits_below(data: bytes, count: int) -> int:
    """Set bits among the first ``count`` bits of a Redis bitmap (bit 0 is the
    highest bit of byte 0)."""
    full, rest = divmod(count, 8)
    total = sum(bin(byte).count("1") for byte in data[:full])
    if rest and len(data) > full:
        total += bin(data[full] >> (8 - rest)).count("1")
    return total


class Soak:
    """The controller: starts everything, samples, injects faults, accounts."""

    def __init__(self, options: argparse.Namespace, seed: int, server) -> None:
        from tests.faults.chaos import ChaosConfig, ChaosRun
        from tests.processes import WorkerProcesses

        self.options = options
        self.server = server
        self.out: Path = options.out
        self.rng = random.Random(seed)
        self.processes = WorkerProcesses()
        self.processes.log_dir = self.out / "logs"
        self.processes.log_dir.mkdir(parents=True, exist_ok=True)
        config = ChaosConfig(seed, options.minutes * 60, 0, lease=LEASE, queue="soak")
        self.chaos = ChaosRun(config, server, self.processes)
        self.chaos.began = time.monotonic()
        self.producers: list[subprocess.Popen] = []
        self.samples: list[dict] = []
        self.last_runs = 0
        self.last_acknowledged = 0
        self.fault_marks: list[tuple[float, str]] = []
        self.harness_errors: list[str] = []
        self.statuses: dict[int, dict] = {}

    def client(self):
        import redis

        return redis.Redis(port=self.server.port, socket_timeout=3)

    def status(self, index: int) -> dict:
        """A producer's last counts (the last ones read, if its file cannot be)."""
        with contextlib.suppress(OSError, ValueError):
            self.statuses[index] = json.loads((self.out / f"producer-{index}.json").read_text())
        return self.statuses.get(index, {})

    def acknowledged(self) -> int:
        return sum(self.status(i).get("acknowledged", 0) for i in range(self.options.producers))

    def start(self) -> None:
        for kind in WORKER_KINDS:
            self.chaos.start_worker((*kind, "--prefetch", str(self.options.prefetch)))
        rate = self.options.rate / self.options.producers
        for index in range(self.options.producers):
            status = self.out / f"producer-{index}.json"
            args = ["--index", str(index), "--seed", str(self.chaos.config.seed * 100 + index)]
            args += ["--rate", str(rate), "--status", str(status)]
            self.producers.append(self.processes.manage("soak_produce", *args))

    def sample(self, elapsed: float) -> None:
        from redis.exceptions import RedisError

        from tests.faults.chaos import rss_mb, tree
        from tests.testapp.soak_jobs import LATENCY_KEY, RUNS_KEY

        pids = [pid for w in self.chaos.workers for pid in tree(w.process.pid)]
        rss = [r for r in (rss_mb(pid) for pid in pids) if r > 0]
        row: dict = {
            "t": round(elapsed, 1),
            "rss_mean_mb": round(sum(rss) / max(len(rss), 1), 1),
            "rss_max_mb": round(max(rss, default=0), 1),
            "rss_total_mb": round(sum(rss), 1),
            "processes": len(rss),
            "load1": os.getloadavg()[0],
        }
        try:
            client = self.client()
            pipe = client.pipeline(transaction=True)
            pipe.lrange(LATENCY_KEY, 0, -1)
            pipe.delete(LATENCY_KEY)
            latencies, _ = pipe.execute()
            runs = int(client.get(RUNS_KEY) or 0)
            row["redis_used_mb"] = round(client.info("memory")["used_memory"] / 2**20, 2)
            client.close()
        except RedisError as error:
            row["redis_error"] = type(error).__name__
            latencies, runs = [], self.last_runs
        values = [int(v) for v in latencies]
        row["latency_p50_ms"] = percentile(values, 0.50)
        row["latency_p99_ms"] = percentile(values, 0.99)
        row["latency_max_ms"] = percentile(values, 1.0)
        acknowledged = self.acknowledged()
        since = elapsed - (self.samples[-1]["t"] if self.samples else 0)
        row["enqueued_per_s"] = round((acknowledged - self.last_acknowledged) / since, 1)
        row["runs_per_s"] = round((runs - self.last_runs) / since, 1)
        row["faults"] = [name for at, name in self.fault_marks if at > elapsed - since]
        self.last_runs, self.last_acknowledged = runs, acknowledged
        self.samples.append(row)
        with (self.out / "samples.jsonl").open("a") as out:
            out.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    def run(self) -> None:
        kinds, weights = list(FAULTS), list(FAULTS.values())
        began = self.chaos.began
        seconds = self.options.minutes * 60
        next_sample = began + SAMPLE_SECONDS
        next_fault = began + self.rng.uniform(*self.options.fault_every)
        while time.monotonic() - began < seconds:
            self.chaos.check_processes()
            for producer in self.producers:
                if producer.poll() is not None:
                    self.chaos.crashed(f"producer {producer.pid} exited", producer)
                    self.producers.remove(producer)
            now = time.monotonic()
            if now >= next_fault:
                fault = self.rng.choices(kinds, weights)[0]
                try:
                    injected = self.chaos.inject(fault)
                except Exception as error:  # the harness' own failure: noted, run goes on
                    self.harness_errors.append(f"{now - began:.0f}s {fault}: {error!r}")
                    if self.server.process and self.server.process.poll() is not None:
                        self.server.start()
                    injected = False
                if injected:
                    self.chaos.faults[fault] += 1
                    self.chaos.note(fault)
                    self.fault_marks.append((now - began, fault))
                next_fault = now + self.rng.uniform(*self.options.fault_every)
            if now >= next_sample:
                self.sample(now - began)
                next_sample += SAMPLE_SECONDS
            time.sleep(0.1)

    def finish(self) -> dict:
        """Stop producing, let the workers drain, then count from the bodies' marks."""
        from tests.faults.chaos import signal_all, tree
        from tests.testapp.soak_jobs import RUNS_KEY, seen_key

        produced_for = time.monotonic() - self.chaos.began
        for producer in self.producers:
            producer.send_signal(signal.SIGTERM)
        for producer in self.producers:
            producer.wait(timeout=60)
        for worker in self.chaos.workers:
            if worker.stopped_until:
                signal_all(tree(worker.process.pid), signal.SIGCONT)
                worker.stopped_until = None
        statuses = [self.status(i) for i in range(self.options.producers)]
        client = self.client()

        def unseen() -> int:
            return sum(
                s["acknowledged"] - bits_below(client.get(seen_key(i)) or b"", s["acknowledged"])
                for i, s in enumerate(statuses)
            )

        drain_began = time.monotonic()
        while unseen() and time.monotonic() - drain_began < 300:
            self.chaos.check_processes()
            time.sleep(1)
        drain_seconds = time.monotonic() - drain_began
        time.sleep(LEASE + 2)  # retries of the last jobs, the last dead letters
        self.sample(time.monotonic() - self.chaos.began)
        self.chaos.stop_workers()
        from django_jobs.models import DeadLetter

        acknowledged = sum(s["acknowledged"] for s in statuses)
        planned_runs = acknowledged + sum(s["fail_once"] + s["dies"] for s in statuses)
        runs = int(client.get(RUNS_KEY) or 0)
        started = [s for s in self.samples[1:] if "redis_used_mb" in s] or self.samples
        return {
            "seed": self.chaos.config.seed,
            "minutes": self.options.minutes,
            "rate asked (jobs/s)": self.options.rate,
            "producing seconds": round(produced_for),
            "jobs enqueued (acknowledged)": acknowledged,
            "rate achieved (jobs/s)": round(acknowledged / produced_for, 1),
            "schedule given up after outages (s)": sum(s["behind_s"] for s in statuses),
            "enqueue batches refused (sent again)": sum(s["errors"] for s in statuses),
            "planned retries (fail once)": sum(s["fail_once"] for s in statuses),
            "planned dead": sum(s["dies"] for s in statuses),
            "dead letter rows": DeadLetter.objects.count(),
            "faults": dict(sorted(self.chaos.faults.items())),
            "faults total": sum(self.chaos.faults.values()),
            "lost": unseen(),
            "runs beyond the planned ones": runs - planned_runs,
            "crashes": self.chaos.crashes,
            "harness errors": self.harness_errors,
            "drain seconds": round(drain_seconds, 1),
            "worker RSS mean MB first/last sample": [
                started[0]["rss_mean_mb"],
                self.samples[-1]["rss_mean_mb"],
            ],
            "Redis used_memory MB first/last sample": [
                started[0].get("redis_used_mb"),
                self.samples[-1].get("redis_used_mb"),
            ],
            "fault log": self.chaos.log,
        }


def main() -> int:
    options = parse_args()
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(10**6)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "samples.jsonl").unlink(missing_ok=True)
    print(f"soak seed {seed}, output in {options.out}", flush=True)
    # Django first (the test helpers import models), on a port chosen now for the
    # private Redis started right after.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DJANGO_JOBS_TEST_DB="sqlite",
        DJANGO_JOBS_TEST_DB_NAME=str(options.out / "soak.sqlite3"),
        DJANGO_JOBS_TEST_PREFIX="soak",
        DJANGO_JOBS_TEST_RESULT_TTL=str(RESULT_TTL),
        REDIS_URL=f"redis://127.0.0.1:{port}/0",
    )
    (options.out / "soak.sqlite3").unlink(missing_ok=True)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from tests.services import RedisServer

    server = RedisServer(aof=True)
    server.port = port
    server.start()
    soak = Soak(options, seed, server)
    try:
        soak.start()
        soak.run()
        summary = soak.finish()
    finally:
        for process in soak.processes.started:
            if process.poll() is None:
                process.kill()
        server.cleanup()
    (options.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "fault log"}, indent=2))
    plot = [sys.executable, str(ROOT / "chaos" / "soak_plot.py"), str(options.out)]
    subprocess.call(plot)
    return 0 if not summary["lost"] and not summary["crashes"] else 1


if __name__ == "__main__":
    sys.exit(main())
