"""How a flow is stored: one Redis hash, written here once, moved on by flow.lua.

``{P:home}:f:<flow id>`` lives in the slot of its first job's queue ("home"). The
flow is a tree of nodes, numbered from 1 (the root): a chain or a group, whose
children are jobs or other nodes; ``group(...).then(x)`` is stored as a chain of
the group and ``x``. Fields:

==============  =====================================================================
``state``       building (its jobs are being written: the hash expires unless
                flow_built.lua keeps it), running, held (a dead member waits for
                triage), succeeded, failed (a member was discarded or cancelled)
                or cancelled
``ttl``         seconds it is kept once it ended; ``finished_at`` (ms); ``result``
                (the root's, JSON); ``dead``: dead members not yet resolved
``q:<queue>``   the keys flow.lua writes a job of that queue with, "\\n"-separated:
                job prefix, waiting, prioritized, scheduled, marker, seq, stats
``<n>k``        node n's kind: ``c`` (chain) or ``g`` (group)
``<n>p``        its place in its parent, ``"<parent>:<pos>"`` ("" for the root)
``<n>n``        its number of children; ``<n>q``: the queue of those that are jobs
``<n>.<pos>``   a child not enqueued at the start: ``n<m>`` (node m) or ``j`` and a
                job's fields, "\\n"-separated (queue, id, name, args, kwargs, options,
                priority, max_attempts, run_at, delay, its lane: ``<name>:<key>``,
                the key of limit_by from its own arguments); ``s<queue>``: a job enqueued
                at the start in another queue than ``<n>q``
``<n>f``        a group's finally_ callback (the same job fields)
``<n>:<pos>``   the outcome of a child, recorded once: ``o`` (succeeded), ``d``
                (dead), ``x`` (discarded) or ``c`` (cancelled), then the id of the
                job that ended it, then for a group member that succeeded " " and
                its result
``<n>e``        a group's number of members ended; ``<n>o``: succeeded
``open``        groups with a finally_ started and not yet called: an ended flow
                expires only once it is 0 (a later member must find its flow)
==============  =====================================================================

A job of a flow has the id ``<flow id>-<node>-<pos>`` (``-f`` for a finally_
callback) and carries its flow and place
in its options as ``"flow": "<key>#<n>:<pos>"`` (a finally_ callback: the key alone),
so a dead letter requeued with the same options resumes its flow. Ids are 20 hex
digits and the option one string, so a member's options stay under Redis' 64-byte
limit for a compact hash with a short prefix and queue name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from django_jobs import enqueueing, outbox
from django_jobs.broker.connection import get_broker
from django_jobs.broker.flows import flow_built, one_slot_only, write_flow
from django_jobs.broker.records import NewJob
from django_jobs.broker.sharding import has_own_limits
from django_jobs.conf import get_settings
from django_jobs.flows.handle import FlowHandle
from django_jobs.flows.nodes import Node, chain, check_start, group
from django_jobs.flows.signature import Signature
from django_jobs.limits import LimitError

logger = logging.getLogger("django_jobs.flows")

# How long a flow written "building" is kept unless every job it starts with is
# stored: long enough for a transaction and the outbox relay behind it, after
# which a producer that died half-way leaves nothing behind.
BUILDING_TTL = 86400


def enqueue_flow(root: chain | group) -> FlowHandle:
    """Store the flow, then enqueue the jobs that start at once (in bulk, through the
    same path as ``enqueue_many``). Once both are written, every later step and
    callback is enqueued by the transition that ends the job before it."""
    check_start(root, None)
    broker = get_broker()
    flow_id = enqueueing.new_job_id()[:20]
    home = _first_job(root).options.queue
    key = broker.keys(home).flow(flow_id)
    plan = _Plan(flow_id, key)
    plan.fields["state"] = "building"
    plan.fields["ttl"] = str(get_settings().result_ttl)
    plan.node(root, "", start=True)
    if enqueueing._testing_stand_in() is not None:  # EAGER, the jobs fixture: no Redis
        from django_jobs.testing.local_flows import enqueue_local

        return enqueue_local(plan)
    if len(plan.queues) > 1 and one_slot_only(broker):
        raise ValueError(
            f"This flow uses the queues {', '.join(sorted(plan.queues))}: on a Redis "
            "Cluster the script that ends a job enqueues the next step in the same slot, "
            "so a flow's jobs must all use one queue. Give its signatures one queue with "
            ".using(queue=...)."
        )
    for queue in plan.queues:
        k = broker.keys(queue)
        plan.fields[f"q:{queue}"] = "\n".join(
            [k.job_prefix, k.waiting, k.prioritized, k.scheduled, k.marker, k.seq, k.stats]
        )
    write_flow(broker, key, plan.fields, BUILDING_TTL)
    enqueueing.write(plan.jobs)
    if outbox.open_transaction() is None:
        try:
            flow_built(broker, key)
        except RedisError:  # its jobs went to the outbox: the relay keeps the flow
            logger.warning("flow %s: Redis unreachable; the outbox relay will keep it", key)
    # (Staged in a transaction: the outbox keeps the flow once it published the jobs.)
    return FlowHandle(key)


def _first_job(node: Node) -> Signature:
    while not isinstance(node, Signature):
        node = node.steps[0] if isinstance(node, chain) else node.members[0]
    return node


@dataclass
class _Plan:
    flow_id: str
    key: str
    fields: dict[str, str] = field(default_factory=dict)
    jobs: list[NewJob] = field(default_factory=list)
    queues: set[str] = field(default_factory=set)
    nodes: int = 0

    def node(self, node: chain | group, parent: str, start: bool) -> int:
        """Store ``node`` and its subtree; ``start``: it starts with the flow."""
        if isinstance(node, group) and node.then_ is not None:
            members = group(*node.members)
            members.finally_callback = node.finally_callback
            node = chain(members, node.then_)
        self.nodes += 1
        n = self.nodes
        is_chain = isinstance(node, chain)
        children = node.steps if isinstance(node, chain) else node.members
        self.fields.update({f"{n}k": "c" if is_chain else "g", f"{n}p": parent})
        self.fields[f"{n}n"] = str(len(children))
        for pos, child in enumerate(children, 1):
            starts = start and (pos == 1 or not is_chain)
            at = f"{n}:{pos}"
            if not isinstance(child, Signature):
                self.fields[f"{n}.{pos}"] = f"n{self.node(child, at, starts)}"
                continue
            new = self.job(child, f"{self.flow_id}-{n}-{pos}", at)
            queue = self.fields.setdefault(f"{n}q", new.queue)
            if not starts:
                self.fields[f"{n}.{pos}"] = "j" + _stored(new)
            else:
                self.jobs.append(new)
                if new.queue != queue:
                    self.fields[f"{n}.{pos}"] = "s" + new.queue
        if isinstance(node, group) and node.finally_callback is not None:
            callback = self.job(node.finally_callback, f"{self.flow_id}-{n}-f", None)
            self.fields[f"{n}f"] = _stored(callback)
            if start:  # flow.lua counts the groups started later
                self.fields["open"] = str(int(self.fields.get("open", "0")) + 1)
        return n

    def job(self, signature: Signature, job_id: str, at: str | None) -> NewJob:
        carried = {"flow": f"{self.key}#{at}" if at else self.key}
        self.queues.add(signature.options.queue)
        new = enqueueing.build(
            signature.job,
            signature.options,
            signature.args,
            signature.kwargs,
            job_id,
            checked=True,
            carried=carried,
        )
        if new.queue in get_broker().shards and (new.limit_key or has_own_limits(new.name)):
            # A flow's jobs all live in its queue's first shard (the script that ends
            # one writes the next in the same slot); a limited job's slots and rate
            # live in the shard of its lane or name, which may be another.
            raise LimitError(
                f"Job {new.name!r}: a flow step with limits (limit_by, rate_limit or "
                f"concurrency_limit) cannot run on the sharded queue {new.queue!r}: its "
                "limits are kept in another shard than the flow's jobs. Give the step an "
                "unsharded queue with .using(queue=...); nothing was enqueued."
            )
        return new


def _stored(new: NewJob) -> str:
    if "\n" in new.limit_key:
        # flow.lua splits a stored job at "\n": such a key would make the step vanish.
        raise LimitError(
            f"Job {new.name!r}: a flow step's limit_by key may not hold a newline "
            "(it is stored with the flow, one field a line); nothing was enqueued."
        )
    return "\n".join(
        [
            new.queue,
            new.id,
            new.name,
            new.args_json,
            new.kwargs_json,
            new.options_json,
            str(new.priority),
            str(new.max_attempts),
            str(new.run_at_ms),
            str(new.delay_ms),
            # Its lane, as Broker.enqueue names it: the step shares its key's limits
            # with the same job enqueued outside a flow.
            new.lane,
        ]
    )
