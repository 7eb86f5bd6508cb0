"""One module per queue system; ``run.py`` runs them in the order listed here.

``raw`` must come first: every other system's figures are divided by the raw
figures measured in the same run. Each module has the same three names:
``NAME``, ``BASELINE`` and ``run(ctx) -> list[Record]``. The peers (Celery,
Dramatiq, ...) run in their own virtualenvs under bench/.cache (see peers.py).
"""

from systems import celery_peer, djjobs, dramatiq_peer, huey_peer, raw, rq_peer

SYSTEMS = {
    module.NAME: module
    for module in (raw, djjobs, rq_peer, huey_peer, celery_peer, dramatiq_peer)
}
