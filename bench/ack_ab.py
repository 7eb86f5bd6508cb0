"""ack.lua of two checkouts, interleaved on one private Redis: script time per call.

    .venv/bin/python bench/ack_ab.py BASE_CHECKOUT NEW_CHECKOUT [--acks 500] [--rounds 80]
    .venv/bin/python bench/ack_ab.py BASE NEW --group 5000 [--rounds 16]

A checkout is a directory holding a ``django_jobs`` package (a ``git worktree`` of
another commit, say). Without ``--group``: plain successes (batch of one, no slot),
each round ``--acks`` of them per checkout, in alternating order, INFO commandstats
reset before each: prints the median EVALSHA usec_per_call of each and the median of
the per-round ratios. With ``--group N``: the ack of a chain's first step, which
starts a group of N members (``chain(step, group(N), step)``), once per checkout a
round: the median script time of each and of the per-round ratios. Run it with
this checkout on PYTHONPATH (it builds the flows).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import uuid
from pathlib import Path

import redis
from common import PrivateRedis

_INCLUDE = re.compile(r"^-- include: (\w+)$", re.MULTILINE)


def ack_source(checkout: str) -> str:
    scripts = Path(checkout) / "django_jobs" / "broker" / "scripts"

    def expand(text: str) -> str:
        return _INCLUDE.sub(
            lambda m: expand((scripts / "includes" / f"{m[1]}.lua").read_text()), text
        )

    return expand((scripts / "ack.lua").read_text())


def plain_acks(client: redis.Redis, sha: dict[str, str], acks: int, rounds: int) -> None:
    tag = "{b:default}"
    keys = [f"{tag}:active", f"{tag}:stats", f"{tag}:marker"]
    usec: dict[str, list[float]] = {name: [] for name in sha}
    for turn in range(rounds):
        for name in sorted(sha, reverse=turn % 2 == 1):
            ids = [uuid.uuid4().hex for _ in range(acks)]
            pipe = client.pipeline(transaction=False)
            for job_id in ids:
                fields = {"lease": "t", "name": "bench.job", "started_at": 1, "state": "running"}
                pipe.hset(f"{tag}:job:{job_id}", mapping=fields)
                pipe.zadd(keys[0], {job_id: 9e12})
            pipe.execute()
            client.config_resetstat()
            for start in range(0, acks, 100):
                pipe = client.pipeline(transaction=False)
                for job_id in ids[start : start + 100]:
                    pipe.evalsha(sha[name], 3, *keys, f"{tag}:job:", 60, job_id, "t", "null", "")
                assert all(reply == [1] for reply in pipe.execute())
            usec[name].append(
                float(client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
            )
    base, new = usec
    ratios = [n / b for b, n in zip(usec[base], usec[new], strict=True)]
    for name, values in usec.items():
        print(f"{name}: median EVALSHA usec_per_call {statistics.median(values):.2f}")
    print(f"{new}/{base}, median of the rounds' ratios: {statistics.median(ratios):.3f}")


def group_start(
    url: str, client: redis.Redis, sha: dict[str, str], members: int, rounds: int
) -> None:
    import django
    from django.conf import settings

    db = os.path.join(tempfile.mkdtemp(), "db.sqlite3")
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_jobs"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db}},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        JOBS={"REDIS_URL": url, "PREFIX": "ackab"},
    )
    django.setup()
    from django_jobs import chain, group, job
    from django_jobs.broker.connection import get_broker

    @job(name="bench.member")
    def member(*_: object) -> int:
        return 1

    broker = get_broker()
    k = broker.keys("default")
    ms: dict[str, list[float]] = {name: [] for name in sha}
    for turn in range(rounds):
        for name in sorted(sha, reverse=turn % 2 == 1):
            chain(member.s(), group(*[member.s() for _ in range(members)]), member.s()).enqueue()
            (first,) = broker.fetch("default", "w", 600_000, 10).jobs
            client.config_resetstat()
            args = [k.job_prefix, 60, first.id, first.token, "1", ""]
            assert client.evalsha(sha[name], 3, k.active, k.stats, k.marker, *args) == [1]
            ms[name].append(client.info("commandstats")["cmdstat_evalsha"]["usec"] / 1000)
            client.delete(k.waiting)  # the members it started
    for name, values in ms.items():
        print(
            f"{name}: the ack starting {members} members, median {statistics.median(values):.1f} ms"
        )
    base, new = ms
    ratios = [n / b for b, n in zip(ms[base], ms[new], strict=True)]
    print(f"{new}/{base}, median of the rounds' ratios: {statistics.median(ratios):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base")
    parser.add_argument("new")
    parser.add_argument("--acks", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--group", type=int, default=0)
    options = parser.parse_args()
    with PrivateRedis() as server:
        client = redis.Redis.from_url(server.url)
        sha = {
            "base": client.script_load(ack_source(options.base)),
            "new": client.script_load(ack_source(options.new)),
        }
        if options.group:
            group_start(server.url, client, sha, options.group, options.rounds)
        else:
            plain_acks(client, sha, options.acks, options.rounds)


if __name__ == "__main__":
    main()
