"""The Huey instance and task: what ``huey_consumer peers_code.huey_app.huey``
loads and the driver calls, both inside the huey virtualenv. Default RedisHuey
settings apart from the URL (blocking dequeue, results on, ``None`` not stored).
"""

from __future__ import annotations

import os

from huey import RedisHuey
from peers_code import job as bench_job

huey = RedisHuey("bench", url=os.environ["BENCH_REDIS_URL"])


@huey.task()
def job(index: int, sent_us: int = 0) -> None:
    bench_job.run(index, sent_us)
