"""The Redis key layout: every key the package uses is built here and nowhere else.

All keys of one queue share the hash tag ``{prefix:queue}`` so every Lua script
touches a single Redis Cluster slot. Per queue:

===========================  ======  ==============================================
key                          type    holds
===========================  ======  ==============================================
``{P:q}:job:<id>``           hash    one job: name, args, kwargs, state, attempt, ...
``{P:q}:waiting``            list    ready jobs of priority 0, FIFO (most jobs)
``{P:q}:prioritized``        zset    ready jobs of any other priority;
                                     score = (100 - priority) * 2^44 + seq
``{P:q}:scheduled``          zset    delayed jobs; score = run_at (ms)
``{P:q}:retrying``           zset    jobs in backoff; score = retry_at (ms)
``{P:q}:active``             zset    running jobs; score = lease expiry (ms)
``{P:q}:pulse``              hash    when a renewal or recovery pass last reached
                                     Redis (``at``, ms) and the latest gap in which
                                     none could (``stall_from``, ``resumed_at``),
                                     and the shortest lease of its callers
                                     (``min_lease``, noted at ``min_lease_at``):
                                     a Redis stall holds leases (includes/pulse.lua)
``{P:q}:dead``               zset    dead jobs whose DeadLetter row is not committed yet
``{P:q}:marker``             zset    one member; BZPOPMIN on it wakes an idle worker
``{P:q}:seq``                string  FIFO sequence within a priority
``{P:q}:stats``              hash    cumulative counters (enqueued, succeeded, ...)
``{P:q}:stats:m:<minute>``   hash    the same counters for one minute (expires)
``{P:q}:stats:q:<quarter>``  hash    ... for one quarter hour (expires)
``{P:q}:stats:e:<quarter>``  hash    enqueues of one quarter hour by minute (expires)
``{P:q}:stats:jobs``         hash    per job name: outcomes, failures by error class,
                                     a histogram of run times (see count.lua)
``{P:q}:paused``             string  present while the queue is paused
``{P:q}:held``               string present while a job asked to hold the queue
                                     (RateLimited); expires with the hold
``{P:q}:rate``               string the queue's rate limit: GCRA's next start (ms)
``{P:q}:lanes``              set     job names whose parked list is not empty
``{P:q}:running:<job>``      set     ids of the running jobs of a job with a
                                     concurrency limit (each holds a slot)
``{P:q}:parked:<job>``       list    queued jobs of that job held back by its
                                     limits, in the order fetch met them
``{P:q}:rate:<job>``         string a job's rate limit (as ``{P:q}:rate``)
``{P:q}:held:<job>``         string present while that job is held (RateLimited)
``{P:q}:keys``               zset    per-key lanes (limit_by) with jobs -> 0 while in
                                     the ring, else the ms time it is parked until
``{P:q}:ring``               list    lanes whose turn it is, round robin (lanes.lua)
``{P:q}:key:<lane>``         zset    a lane's queued jobs by priority, then place;
                                     ``<lane>`` is "<job name>:<limit key>"
``{P:q}:krun:<lane>``        set     ids of a lane's running jobs holding a slot
``{P:q}:krate:<lane>``       string  a lane's rate limit (as ``{P:q}:rate``)
``{P:q}:purge:<ms>``         zset    lanes a purge begun at <ms> has still to walk,
                                     by name (purge.lua); expires
``{P:q}:due``                string  "<ms> <worker id> [<worker id>]": the moment
                                     two idle workers sleep until for a parked key
                                     (the others leave it to them)
``{P:q}:dedupe:<key>``       string  id of the job holding a dedupe key, until its TTL
``{P:q}:debounce:<lane>``    string  the same for a debounced job's key, per job:
                                     ``<lane>`` is "<job name>:<dedupe key>"
``{P:q}:runs:<name>``        list    a schedule's latest 20 runs: "<tick ms>:<job id>"
``{P:q}:tick:<name>:<ms>``   string  claim of one tick of a schedule: the id of the
                                     job enqueued for it; expires (enqueue_tick.lua)
``{P:q}:now:<name>:<id>``    string  claim of an operator's "run now" of a schedule
                                     (job <id>), never a tick's; expires
``{P:q}:f:<id>``             hash    one workflow whose first job is in this queue
                                     (see django_jobs/flows/layout.py); expires
                                     after it ended, or a day after it was
                                     written if its jobs never all were
``{P:q}:quarantined<rest>``  any     the key ``{P:q}<rest>`` of this queue, which
                                     held the wrong type, moved aside by a fetch
                                     (quarantine.lua; see :func:`quarantined`)
===========================  ======  ==============================================

A job's hash also holds one ``step:<name>`` field per durable step it stored
(``context.step``, see step.lua), so steps expire and go with their job.

fetch.lua builds ``rate`` and the per-job keys (``<job>`` is a job's name) from
:attr:`QueueKeys.limit_prefix`, which it reads off the ``lanes`` key it is given,
and the literal segments above, as count.lua builds the stats buckets; it records
the running key in the job's ``slot`` field, which the transitions that end a run
read back (includes/free_slot.lua): all in the queue's slot.

The lane keys are built by the scripts from the queue's tag (includes/lanes.lua),
like fetch.lua's.

``{P:q}:wake:<worker>`` (zset) ends one worker's idle wait on a Redis Cluster,
where a blocking wait covers one slot (see Broker.wait_then_fetch).
``{P:q}:guard`` is never written: on a Redis Cluster every script call names it, so
Redis refuses the call while the slot migrates (cluster_wire.py).

A queue with ``JOBS["QUEUES"][q]["shards"] = N`` keeps N copies of the layout
above, one per shard: shard 0 under ``{P:q}`` (so N=1 is the plain layout), shard
i under ``{P:q~i}``. Each shard is named like a queue (``q~i``, see
:func:`shard_name`) and the broker and worker treat it as one; ``~`` is not
allowed in a queue's name, so no queue's tag is another queue's shard.

Global, single-key (no hash tag; never touched by a script but quarantine.lua,
which moves ``P:queues`` aside to ``{P:queues}:quarantined`` when it holds the
wrong type): ``P:queues`` (set of queue names), ``P:health`` (a probe write of
``jobs health``) and
``P:worker:<id>:wake`` (zset that ends one worker's idle wait on a single server).
The worker registry lives in a slot of its own, ``{P}``, for heartbeat.lua:
``{P}:workers`` (zset: worker id -> when its entry expires, ms) and
``{P}:worker:<id>`` (hash: host, pid, queues, started, current jobs; expires
unless renewed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The score of a per-key lane waiting for one of its slots (lanes.lua's SLOT_WAIT).
LANE_SLOT_WAIT = 4_000_000_000_000_000

# A job hash's field "step:<name>" holds that durable step's stored result.
STEP_FIELD_PREFIX = "step:"

QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
# Between a queue's name and a shard's number; QUEUE_NAME_RE leaves it out.
SHARD_MARK = "~"


def validate_queue_name(name: object) -> str:
    if not isinstance(name, str) or not QUEUE_NAME_RE.match(name):
        raise ValueError(
            f"Queue name {name!r} is not valid: use 1-100 letters, digits, '_', '-' or '.'."
        )
    return name


@dataclass(frozen=True)
class QueueKeys:
    prefix: str
    queue: str

    @property
    def tag(self) -> str:
        return f"{{{self.prefix}:{self.queue}}}"

    @property
    def job_prefix(self) -> str:
        return f"{self.tag}:job:"

    def job(self, job_id: str) -> str:
        return f"{self.job_prefix}{job_id}"

    @property
    def waiting(self) -> str:
        return f"{self.tag}:waiting"

    @property
    def prioritized(self) -> str:
        return f"{self.tag}:prioritized"

    @property
    def scheduled(self) -> str:
        return f"{self.tag}:scheduled"

    @property
    def retrying(self) -> str:
        return f"{self.tag}:retrying"

    @property
    def active(self) -> str:
        return f"{self.tag}:active"

    @property
    def pulse(self) -> str:
        return f"{self.tag}:pulse"

    @property
    def dead(self) -> str:
        return f"{self.tag}:dead"

    @property
    def marker(self) -> str:
        return f"{self.tag}:marker"

    @property
    def seq(self) -> str:
        return f"{self.tag}:seq"

    @property
    def stats(self) -> str:
        return f"{self.tag}:stats"

    def stats_minute(self, minute: int) -> str:
        """Counters of one minute (minutes since the epoch); count.lua writes them."""
        return f"{self.stats}:m:{minute}"

    def stats_quarter(self, quarter: int) -> str:
        """Counters of one quarter hour (quarter hours since the epoch)."""
        return f"{self.stats}:q:{quarter}"

    def stats_enqueued(self, quarter: int) -> str:
        """Enqueues of one quarter hour, a field per minute (count.lua's count_enqueued)."""
        return f"{self.stats}:e:{quarter}"

    @property
    def job_stats(self) -> str:
        return f"{self.stats}:jobs"

    def dedupe(self, dedupe_key: str) -> str:
        """Holds the id of the live job that claimed ``dedupe_key`` (expires with its TTL)."""
        return f"{self.tag}:dedupe:{dedupe_key}"

    def debounce(self, job_name: str, dedupe_key: str) -> str:
        """``dedupe`` for ``dedupe_mode="debounce"``: per job, not per queue, since a
        duplicate replaces the waiting job's arguments, which only the same job's
        arguments may do."""
        return f"{self.tag}:debounce:{lane_id(job_name, dedupe_key)}"

    @property
    def paused(self) -> str:
        return f"{self.tag}:paused"

    def schedule_runs(self, schedule: str) -> str:
        """The latest runs of a schedule whose jobs go to this queue (newest first)."""
        return f"{self.tag}:runs:{schedule}"

    @property
    def held(self) -> str:
        return f"{self.tag}:held"

    @property
    def rate(self) -> str:
        return f"{self.limit_prefix}rate"

    @property
    def limit_prefix(self) -> str:
        """What fetch.lua puts before "running:<job>", "parked:<job>", ... ."""
        return f"{self.tag}:"

    def running(self, job_name: str) -> str:
        """Ids of the running jobs of ``job_name`` that hold a concurrency slot."""
        return f"{self.limit_prefix}running:{job_name}"

    def parked(self, job_name: str) -> str:
        """Queued jobs of ``job_name`` held back by its limits."""
        return f"{self.limit_prefix}parked:{job_name}"

    def job_rate(self, job_name: str) -> str:
        return f"{self.limit_prefix}rate:{job_name}"

    def job_held(self, job_name: str) -> str:
        return f"{self.limit_prefix}held:{job_name}"

    @property
    def lanes(self) -> str:
        """Job names with parked jobs; fetch.lua takes the limit prefix from it."""
        return f"{self.limit_prefix}lanes"

    def flow(self, flow_id: str) -> str:
        """A workflow's state, in the slot of the queue its first job goes to. Its jobs
        carry this key in their options; flow.lua reads it from there. Short, so
        that a job's options stay under Redis' 64-byte limit for a compact hash."""
        return f"{self.tag}:f:{flow_id}"

    @property
    def key_lanes(self) -> str:
        """Every per-key lane with jobs: in the ring (0), or parked until (lanes.lua)."""
        return f"{self.tag}:keys"

    @property
    def lane_ring(self) -> str:
        """The lanes whose turn it is, round robin."""
        return f"{self.tag}:ring"

    def lane(self, lane: str) -> str:
        """The queued jobs of one lane (``lane_id``)."""
        return f"{self.tag}:key:{lane}"

    def lane_running(self, lane: str) -> str:
        return f"{self.tag}:krun:{lane}"

    def lane_rate(self, lane: str) -> str:
        return f"{self.tag}:krate:{lane}"

    @property
    def lane_due(self) -> str:
        """Which idle workers claimed the moment the next parked lane may start."""
        return f"{self.limit_prefix}due"

    def wake(self, worker_id: str) -> str:
        """Ends ``worker_id``'s wait on this queue's slot (Redis Cluster only)."""
        return f"{self.tag}:wake:{worker_id}"

    def tick_claim(self, schedule: str, tick_ms: int) -> str:
        """Claim of one tick of a schedule, in the slot of the queue its job goes to."""
        return f"{self.tag}:tick:{schedule}:{tick_ms}"

    def manual_run_claim(self, schedule: str, job_id: str) -> str:
        """Claim of an operator's "run now" of a schedule: its own, never a tick's,
        even one at the same millisecond (which would then be skipped, or swallow
        the manual run)."""
        return f"{self.tag}:now:{schedule}:{job_id}"


def quarantined(key: str) -> str:
    """Where a key of the wrong type is moved aside (quarantine.lua, enqueue.lua):
    the same hash tag, so the same slot on a Redis Cluster, then ``quarantined``
    and the rest of the name. Right after the tag, where every live key has a
    fixed segment (``dedupe``, ``key``, ...) and never text of the user's: a
    suffix would let a dedupe key "a" go aside over the live dedupe key
    "a:quarantined". A key without a tag (``P:queues``) is hashed whole, so its
    whole name becomes the tag."""
    tag, brace, rest = key.partition("}")
    if key.startswith("{") and brace:
        return f"{tag}}}:quarantined{rest}"
    return f"{{{key}}}:quarantined"


def queue_of_key(key: str) -> str:
    """The queue (or shard) of a key built here: what its hash tag holds after the
    prefix (a queue's name has no ":"), or "" for a key with no tag."""
    tag, brace, _ = key.partition("}")
    return tag.rpartition(":")[2] if key.startswith("{") and brace else ""


def shard_name(queue: str, shard: int) -> str:
    """The name shard ``shard`` of ``queue`` goes by in the broker (its keys' tag):
    the queue's own name for shard 0, so a queue of one shard is a plain queue."""
    return f"{queue}{SHARD_MARK}{shard}" if shard else queue


def shard_names(queue: str, shards: int) -> list[str]:
    return [shard_name(queue, shard) for shard in range(shards)]


def queue_of_shard(name: str) -> str:
    """The queue a shard belongs to (a plain queue's name is returned as it is)."""
    return name.partition(SHARD_MARK)[0]


def lane_id(job_name: str, limit_key: str) -> str:
    """A job's limits hold per key: each (job, key) has its own lane."""
    return f"{job_name}:{limit_key}"


def queues_key(prefix: str) -> str:
    return f"{prefix}:queues"


def worker_wake_key(prefix: str, worker_id: str) -> str:
    """A per-worker zset; a member added here ends that worker's idle wait at once."""
    return f"{prefix}:worker:{worker_id}:wake"


def workers_key(prefix: str) -> str:
    return f"{{{prefix}}}:workers"


def health_key(prefix: str) -> str:
    """Written (with a short TTL) by ``jobs health`` to prove Redis takes writes."""
    return f"{prefix}:health"


def worker_key(prefix: str, worker_id: str) -> str:
    return f"{{{prefix}}}:worker:{worker_id}"


def slot_guard(key: str) -> str:
    """The guard key of ``key``'s slot: ``key``'s hash tag + ":guard", or for a key
    without one (hashed whole: ``P:queues``, which only quarantine.lua is given) the
    whole key as the tag. Never written (see cluster_wire.py)."""
    if not key.startswith("{"):
        return f"{{{key}}}:guard"
    tag, brace, _ = key.partition("}")
    if not brace:
        raise ValueError(f"{key!r} opens a hash tag it never closes.")
    return f"{tag}}}:guard"
