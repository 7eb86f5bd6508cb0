"""One module per queue system; ``run.py`` runs them in the order listed here.

``raw`` must come first: every other system's figures are divided by the raw
figures measured in the same run. Then django-jobs, then the peers: RQ, Huey,
Celery, Dramatiq, django-q2 and BullMQ, each run in an environment of its own
under bench/.cache (see ``peers.py``). Every module has the same three names:
``NAME``, ``BASELINE`` and ``run(ctx) -> list[Record]``.
"""

from systems import (
    bullmq_peer,
    celery_peer,
    djangoq_peer,
    djjobs,
    dramatiq_peer,
    huey_peer,
    raw,
    rq_peer,
)

SYSTEMS = {
    module.NAME: module
    for module in (
        raw,
        djjobs,
        rq_peer,
        huey_peer,
        celery_peer,
        dramatiq_peer,
        djangoq_peer,
        bullmq_peer,
    )
}
