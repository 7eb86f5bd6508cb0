"""One job's enqueue, the call a view makes, with as little client work as it can.

``Broker.enqueue`` batches any number of jobs over any number of queues; for one
job that machinery, and packing the script call's 23 arguments, cost more than
Redis' own work. Here the arguments that are the same for every call of one
kind of job (the queue's keys, the job's name, priority, attempts, delay) are
packed once (a ``CommandTemplate``), and a call packs its id, arguments and
stored options (which may carry a per-call trace context or idempotency key)
into it and makes one exchange. The script is enqueue_one.lua, enqueue.lua
without its dedupe modes and lanes: Redis runs a script's whole body per call,
and those cost a plain job about a third of its Redis time. Jobs with dedupe
options, a start time or a limit key (per call, usually), and jobs of a sharded
queue, take ``Broker.enqueue``: enqueue.lua, the same stored job. On a Redis
Cluster a plain job runs enqueue_one.lua too, in a call routed by key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from django_jobs.broker.keys import QueueKeys
from django_jobs.broker.records import EnqueueRefused, NewJob
from django_jobs.broker.wire import CommandTemplate

if TYPE_CHECKING:
    from django_jobs.broker.api import Broker

# Kinds of job (queue, name, priority, attempts, delay) kept per process; past
# this the cache starts afresh (a delay per call makes many kinds).
MAX_TEMPLATES = 1024
_SLOT = CommandTemplate.SLOT
# enqueue_one.lua's answer when the short call's push met something else than a list.
AGAIN = "again"

TemplateKey = tuple[str, str, int, int, int]


def enqueue_keys(k: QueueKeys) -> list[str]:
    """enqueue.lua's KEYS."""
    return [k.waiting, k.prioritized, k.scheduled, k.marker, k.seq, k.stats]


def enqueue_one_call(k: QueueKeys, new: NewJob, slots: bool = False) -> tuple[list[str], list]:
    """enqueue_one.lua's KEYS and ARGV for ``new``; with ``slots``, a template's: the
    id, arguments, kwargs and options left as ``CommandTemplate.SLOT``. A job of
    priority 0 with no delay is sent only what its path uses (each key or argument
    costs Redis about 1,300 instructions a call); the script answers AGAIN when
    that path meets something else than a list, and the job takes
    ``Broker.enqueue``."""
    per_call = [_SLOT] * 4 if slots else [new.id, new.args_json, new.kwargs_json, new.options_json]
    job_id, args_json, kwargs_json, options_json = per_call
    keys = [k.waiting, k.marker, k.stats]
    args = [k.job_prefix, job_id, new.name, args_json, kwargs_json, options_json, new.max_attempts]
    if new.priority != 0 or new.delay_ms:
        keys += [k.prioritized, k.scheduled, k.seq]
        args += [new.priority, new.delay_ms]
    return keys, args


class SingleEnqueue:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._templates: dict[TemplateKey, CommandTemplate] = {}
        self._packed = broker.wire.sends_packed

    def __call__(self, new: NewJob) -> str:
        """Write one job; its state as ``Broker.enqueue`` gives it, with the same
        errors (EnqueueRefused when Redis refused it)."""
        template = self.template_for(new)
        broker = self._broker
        if template is None and (self._packed or not _plain(new) or new.queue in broker.shards):
            return broker.enqueue([new])[0]  # enqueue.lua: dedupe, lanes, a start time
        try:
            if template is not None:
                state = broker.wire.run_packed(
                    broker.scripts.enqueue_one,
                    template.pack(new.id, new.args_json, new.kwargs_json, new.options_json),
                )
            else:
                # A Cluster: the same script, its call routed by key (cluster_wire.py).
                broker._register_queues([new.queue])
                keys, args = enqueue_one_call(broker.keys(new.queue), new)
                (state,) = broker.wire.run([(broker.scripts.enqueue_one, keys, args)])
        except ResponseError as error:
            raise EnqueueRefused(broker._stored_states([new]), error) from error
        if state == AGAIN:  # the push met something else than a list: nothing written
            return broker.enqueue([new])[0]
        return state

    def template_for(self, new: NewJob) -> CommandTemplate | None:
        """enqueue_one.lua's call for this kind of job (pack the job into it), None
        for a job the template leaves out, which takes ``Broker.enqueue``."""
        if (
            not _plain(new)
            or not self._packed  # a Cluster: calls routed by key (cluster_wire.py)
            or new.queue in self._broker.shards  # a shard per job (Broker.shard_of)
        ):
            return None
        key = (new.queue, new.name, new.priority, new.max_attempts, new.delay_ms)
        template = self._templates.get(key)
        if template is None:
            template = self._template(new)
            if len(self._templates) >= MAX_TEMPLATES:
                self._templates.clear()
            self._templates[key] = template
        return template

    def _template(self, new: NewJob) -> CommandTemplate:
        """enqueue_one.lua's call with the id, the job's arguments and its options
        left as slots."""
        broker = self._broker
        broker._register_queues([new.queue])
        keys, args = enqueue_one_call(broker.keys(new.queue), new, slots=True)
        return CommandTemplate(["EVALSHA", broker.scripts.enqueue_one.sha, len(keys), *keys, *args])


def _plain(new: NewJob) -> bool:
    """Whether enqueue_one.lua writes this job: no start time, dedupe or lane."""
    return not (
        new.run_at_ms
        or new.dedupe_key
        or new.dedupe_ttl_ms
        or new.dedupe_mode
        or new.limit_key  # its lane, from the call's arguments
    )
