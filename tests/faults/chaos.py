"""The chaos run: producer and worker processes on a private Redis with AOF, and a
seeded controller that injects faults at random moments. Replay a run with its
seed (printed first, and in the summary); the moments depend on the machine's
speed, the choice and order of faults only on the seed.

Faults: kill -9 a worker (a whole thread-mode worker, or one child of a
``--processes`` supervisor), SIGSTOP a worker past its lease then SIGCONT, SIGTERM
a worker (a new one starts at once), restart Redis (AOF keeps the data), CLIENT
PAUSE, kill -9 a producer between its commit and its publish, and (when the run
has a private PostgreSQL cluster, see chaos/run.py) stop PostgreSQL for 1-4 s while
jobs go on dying and being dead-lettered.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis
from django.db import connection

from tests.helpers import poll
from tests.processes import WorkerProcesses
from tests.services import PostgresServer, RedisServer
from tests.testapp.chaos_jobs import QUEUE

FAULTS = {
    "kill -9 worker": 3,
    "kill -9 worker child": 2,
    "SIGSTOP past lease": 3,
    "SIGTERM worker": 2,
    "restart Redis": 1,
    "CLIENT PAUSE": 2,
    "kill -9 producer after commit": 2,
    "stop PostgreSQL": 1,  # only with ChaosConfig.postgres
}
POSTGRES_DOWN = (1.0, 4.0)

# A worker this young may not have set its SIGTERM handler yet; nor one that has not
# logged one of these lines (printed once the handlers are set): on a loaded machine
# Django alone can take longer than that to start.
BOOT_SECONDS = 15
READY_LINES = ("started worker process", "serving queues")

# Thread workers and --processes supervisors, with and without prefetch.
WORKER_KINDS = (
    ("--concurrency", "4"),
    ("--concurrency", "4", "--prefetch", "4"),
    ("--processes", "2", "--concurrency", "2"),
    ("--processes", "2", "--concurrency", "2", "--prefetch", "2"),
)


@dataclass
class ChaosConfig:
    seed: int
    seconds: float
    min_faults: int
    lease: float = 2.0
    producers: int = 3
    atomic_producers: int = 2
    rate: float = 15.0
    pause: tuple[float, float] = (0.8, 3.0)
    queue: str = QUEUE
    # A private cluster the run may stop and start (the database of everything).
    postgres: PostgresServer | None = None


@dataclass
class Worker:
    kind: tuple[str, ...]
    process: subprocess.Popen
    log: Path
    expected_code: int | None = None
    stopped_until: float | None = None
    started_at: float = field(default_factory=time.monotonic)

    def logged_ready(self) -> bool:
        text = self.log.read_text(errors="replace")
        return any(line in text for line in READY_LINES)

    def booting(self) -> bool:
        return time.monotonic() - self.started_at < BOOT_SECONDS or not self.logged_ready()

    def terminate(self) -> None:
        """SIGTERM: a clean exit (0), or the default action (-15) for a process still
        starting up, before it has set its signal handlers (it holds no job yet)."""
        booting = self.booting()
        self.expected_code = -signal.SIGTERM if booting else 0
        self.process.send_signal(signal.SIGTERM)


@dataclass
class Producer:
    name: str
    atomic: bool
    process: subprocess.Popen
    armed: bool = False


def children(pid: int) -> list[int]:
    """Direct children of a process (a supervisor's worker processes)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def tree(pid: int) -> list[int]:
    pids = [pid]
    for child in children(pid):
        pids.extend(tree(child))
    return pids


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class ChaosRun:
    config: ChaosConfig
    server: RedisServer
    processes: WorkerProcesses
    log: list[str] = field(default_factory=list)
    faults: Counter = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    producers: list[Producer] = field(default_factory=list)
    retired: list[Worker] = field(default_factory=list)
    memory: dict[str, float] = field(default_factory=dict)
    stopped_pids: set[int] = field(default_factory=set)
    # (stopped, started) epoch ms of each PostgreSQL outage.
    outages: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.env = {"DJANGO_JOBS_TEST_LEASE": str(self.config.lease)}
        self.generation = 0
        self.producing = True
        self.postgres_down_until: float | None = None

    def note(self, message: str) -> None:
        self.log.append(f"{time.monotonic() - self.began:8.2f}s {message}")

    def crashed(self, what: str, process: subprocess.Popen) -> None:
        """Record an unplanned exit, with the last lines the process printed."""
        tail = self.processes.logs[process.pid].read_text().splitlines()[-12:]
        self.crashes.append("\n    ".join([what, *tail]))
        self.note(f"CRASH {what}")

    # -- processes ------------------------------------------------------------

    def start_worker(self, kind: tuple[str, ...]) -> Worker:
        process = self.processes.start(
            "--queues", self.config.queue, "--grace", "3", *kind, **self.env
        )
        worker = Worker(kind, process, self.processes.logs[process.pid])
        self.workers.append(worker)
        return worker

    def start_producer(self, index: int, atomic: bool) -> Producer:
        self.generation += 1
        name = f"p{index}g{self.generation}"
        seed = self.config.seed * 1000 + self.generation
        ready = self.processes.log_dir / f"{name}.ready"
        args = ["--seed", str(seed), "--name", name, "--rate", str(self.config.rate)]
        args += ["--ready-file", str(ready)]
        process = self.processes.manage("chaos_produce", *args, *(["--atomic"] * atomic))
        producer = Producer(name, atomic, process)
        self.producers.append(producer)
        return producer

    def everyone_ready(self) -> bool:
        return all(w.logged_ready() for w in self.workers) and all(
            (self.processes.log_dir / f"{p.name}.ready").exists() for p in self.producers
        )

    def retire(self, worker: Worker) -> None:
        """Replace a worker we stopped on purpose by a fresh one of its kind."""
        self.workers.remove(worker)
        self.retired.append(worker)
        self.start_worker(worker.kind)

    def check_processes(self) -> None:
        """Resume workers whose stop is over, count unplanned exits as crashes, and
        restart producers killed after their commit; start PostgreSQL again when its
        outage is over."""
        now = time.monotonic()
        if self.postgres_down_until and now >= self.postgres_down_until:
            self.start_postgres()
        for worker in list(self.workers):
            if worker.stopped_until and now >= worker.stopped_until:
                signal_all(tree(worker.process.pid), signal.SIGCONT)
                worker.stopped_until = None
            code = worker.process.poll()
            if code is not None:
                self.crashed(
                    f"worker {worker.process.pid} {worker.kind} exited {code}", worker.process
                )
                self.workers.remove(worker)
                self.start_worker(worker.kind)
        for producer in list(self.producers if self.producing else ()):
            code = producer.process.poll()
            if code is None:
                continue
            self.producers.remove(producer)
            if producer.armed and code == -signal.SIGKILL:
                self.faults["kill -9 producer after commit"] += 1
                self.note(f"producer {producer.name} died after a commit")
            else:
                self.crashed(f"producer {producer.name} exited {code}", producer.process)
            index = int(producer.name[1 : producer.name.index("g")])
            self.start_producer(index, producer.atomic)

    def start_postgres(self) -> None:
        assert self.config.postgres is not None
        self.config.postgres.start()
        self.postgres_down_until = None
        self.outages[-1] = (self.outages[-1][0], int(time.time() * 1000))
        self.note("PostgreSQL started")
        connection.close()  # this process' connection died with the server

    # -- faults -----------------------------------------------------------------

    def running_workers(self, supervisors: bool | None = None) -> list[Worker]:
        return [
            w
            for w in self.workers
            if w.stopped_until is None
            and (supervisors is None or ("--processes" in w.kind) == supervisors)
        ]

    def inject(self, fault: str) -> bool:
        """Apply one fault; False when no process fits it right now."""
        if fault == "kill -9 worker":
            candidates = self.running_workers()
            if not candidates:
                return False
            victim = self.rng.choice(candidates)
            victim.expected_code = -signal.SIGKILL
            signal_all(tree(victim.process.pid), signal.SIGKILL)
            self.retire(victim)
        elif fault == "kill -9 worker child":
            pids = [c for w in self.running_workers(True) for c in children(w.process.pid)]
            if not pids:
                return False
            os.kill(self.rng.choice(sorted(pids)), signal.SIGKILL)
        elif fault == "SIGSTOP past lease":
            candidates = self.running_workers()
            if len(candidates) < 2:
                return False
            victim = self.rng.choice(candidates)
            stopped = tree(victim.process.pid)
            signal_all(stopped, signal.SIGSTOP)
            self.stopped_pids.update(stopped)
            victim.stopped_until = time.monotonic() + self.config.lease * 2 + 1
        elif fault == "SIGTERM worker":
            candidates = self.running_workers()
            if not candidates:
                return False
            victim = self.rng.choice(candidates)
            victim.terminate()
            self.retire(victim)
        elif fault == "restart Redis":
            self.server.restart()
        elif fault == "stop PostgreSQL":
            if self.config.postgres is None or self.postgres_down_until:
                return False
            self.config.postgres.stop()
            self.outages.append((int(time.time() * 1000), 0))
            self.postgres_down_until = time.monotonic() + self.rng.uniform(*POSTGRES_DOWN)
        elif fault == "CLIENT PAUSE":
            client = redis.Redis(port=self.server.port)
            client.execute_command("CLIENT", "PAUSE", int(self.rng.uniform(300, 2000)), "ALL")
            client.close()
        elif fault == "kill -9 producer after commit":
            candidates = [
                p
                for p in self.producers
                if p.atomic
                and not p.armed
                and (self.processes.log_dir / f"{p.name}.ready").exists()
            ]
            if not candidates:
                return False
            victim = self.rng.choice(candidates)
            victim.armed = True
            victim.process.send_signal(signal.SIGUSR1)
            return False  # counted once it has died (check_processes)
        return True

    def sample_memory(self, when: str) -> None:
        pids = [pid for w in self.workers for pid in tree(w.process.pid)]
        self.memory[f"worker RSS MB (mean) {when}"] = round(
            sum(rss_mb(pid) for pid in pids) / max(len(pids), 1), 1
        )
        info = redis.Redis(port=self.server.port).info("memory")
        self.memory[f"Redis used_memory MB {when}"] = round(info["used_memory"] / 2**20, 2)

    # -- the run --------------------------------------------------------------------

    def run(self) -> None:
        """Produce under faults until both the time and the fault count are reached,
        then stop the producers and let the workers drain everything."""
        self.began = time.monotonic()
        self.note(f"seed {self.config.seed}")
        for kind in WORKER_KINDS:
            self.start_worker(kind)
        for index in range(self.config.producers):
            self.start_producer(index, atomic=index < self.config.atomic_producers)
        # The "start" sample is of everything up and serving, however slow the machine.
        poll(self.everyone_ready, timeout=120, interval=0.1, describe=self.processes.output)
        self.sample_memory("start")
        faults = {k: w for k, w in FAULTS.items() if self.config.postgres or "Postgre" not in k}
        kinds, weights = list(faults), list(faults.values())
        next_fault = time.monotonic() + self.rng.uniform(*self.config.pause)
        while (
            time.monotonic() - self.began < self.config.seconds
            or sum(self.faults.values()) < self.config.min_faults
        ):
            self.check_processes()
            if time.monotonic() >= next_fault:
                fault = self.rng.choices(kinds, weights)[0]
                if self.inject(fault):
                    self.faults[fault] += 1
                    self.note(fault)
                next_fault = time.monotonic() + self.rng.uniform(*self.config.pause)
            time.sleep(0.05)
        self.finish_producing()

    def finish_producing(self) -> None:
        self.producing = False
        if self.postgres_down_until:
            self.start_postgres()
        for producer in self.producers:
            producer.process.send_signal(signal.SIGTERM)
        for producer in self.producers:
            producer.process.wait(timeout=60)
        for worker in self.workers:
            if worker.stopped_until:
                signal_all(tree(worker.process.pid), signal.SIGCONT)
                worker.stopped_until = None
        self.note("producers stopped; draining")

    def stop_workers(self) -> None:
        self.sample_memory("end")
        for worker in self.workers:
            worker.terminate()
        for worker in self.workers + self.retired:
            try:
                code = worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = "none: it did not stop on SIGTERM"
            if code not in (worker.expected_code, 0):
                what = f"worker {worker.process.pid} {worker.kind} exited {code}, "
                self.crashed(what + f"not {worker.expected_code}", worker.process)
            for pid in tree(worker.process.pid):
                signal_all([pid], signal.SIGKILL)
