"""What a worker process is asked to do (``runjobs`` options) and who it is."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field


def resident_memory_mb() -> float:
    """This process's resident memory now (Linux /proc), or its peak elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerOptions:
    queues: list[str] = field(default_factory=lambda: ["default"])
    concurrency: int = 1
    prefetch: int = 0  # jobs leased ahead of free threads, so a thread never waits on Redis
    burst: bool = False
    max_jobs: int | None = None
    grace_seconds: float | None = None
    max_memory_mb: float | None = None
    parent_pid: int | None = None  # set for a supervised child: stop if the parent dies
    supervisor_fd: int | None = None  # a supervised child's pipe to its supervisor
    scheduler: bool = False  # run the cron scheduler too (never in burst mode)
    # runjobs: the process is the worker's own, and is ended by a deadline once a run
    # is given back for later (draining.py); never a process that embeds a Worker.
    owns_process: bool = False
