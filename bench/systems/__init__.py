"""One module per queue system; ``run.py`` runs them in the order listed here.

``raw`` must come first: every other system's figures are divided by the raw
figures measured in the same run. Each module has the same three names:
``NAME``, ``BASELINE`` and ``run(ctx) -> list[Record]``. The peers (Celery,
Dramatiq, ...) run in their own virtualenvs under bench/.cache (see peers.py).
"""

from systems import celery_peer, djjobs, dramatiq_peer, raw

SYSTEMS = {module.NAME: module for module in (raw, djjobs, celery_peer, dramatiq_peer)}
