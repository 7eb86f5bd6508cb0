"""BullMQ (Node.js): the newest ``bullmq`` from the npm registry, with ioredis.

* enqueue single: ``await queue.add(...)`` one job at a time, from a Node driver;
* enqueue bulk: ``queue.addBulk`` in chunks of ``ctx.chunk``;
* drain: ``node worker.mjs CONCURRENCY`` processes (one ``Worker`` each, whose
  processor runs the common job body on its own ioredis connection), at concurrency
  1, 10, 50 and 100 in one process, and 2 processes x 50.

Jobs are added with ``removeOnComplete: 1000`` (the newest 1,000 completed jobs are
kept, older ones deleted as jobs finish); everything else is BullMQ's default. The
scripts live in ``bench/peers_code/bullmq/`` and are copied next to their
``node_modules`` in bench/.cache/node/bullmq before a run.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from common import BENCH_DIR, Context
from peers import node_env, peer_env

from systems.peer_run import Peer, Runtime, Setting, as_system

NAME = "bullmq"
PACKAGES = ["bullmq@6.7.0", "ioredis@6.0.0"]
SCRIPTS = BENCH_DIR / "peers_code" / "bullmq"


def prepare(ctx: Context) -> Runtime:
    """The npm environment with the bench's scripts copied into it."""
    path = node_env("bullmq", PACKAGES)
    for script in SCRIPTS.glob("*.mjs"):
        shutil.copyfile(script, path / script.name)

    def version(package: str) -> str | None:
        manifest = path / "node_modules" / package / "package.json"
        return json.loads(manifest.read_text()).get("version") if manifest.exists() else None

    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    versions = {
        "bullmq": version("bullmq"),
        "ioredis": version("ioredis"),
        "node": node.stdout.strip(),
    }
    return Runtime(path, ["node", str(path / "driver.mjs")], path, peer_env(ctx), versions)


def setting(key: str, processes: int, concurrency: int) -> Setting:
    def command(runtime: Runtime) -> list[str]:
        return ["node", str(runtime.home / "worker.mjs"), str(concurrency)]

    label = f"{processes} process{'es' if processes > 1 else ''} x concurrency {concurrency}"
    return Setting(key, label, command, processes=processes, details={"concurrency": concurrency})


PEER = Peer(
    name=NAME,
    prepare=prepare,
    settings=[
        setting("c1", 1, 1),
        setting("c10", 1, 10),
        setting("c50", 1, 50),
        setting("c100", 1, 100),
        setting("p2x50", 2, 50),
    ],
    single_label="enqueue, single (await queue.add)",
    bulk_label="enqueue, bulk (queue.addBulk, chunks of {chunk})",
    notes="removeOnComplete 1000; BullMQ defaults otherwise",
    queue_length=lambda client: int(client.llen("bull:bench:wait")),
)
BASELINE, run = as_system(PEER)
