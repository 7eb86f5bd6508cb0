"""One module per queue system; ``run.py`` runs them in the order listed here.

``raw`` must come first: every other system's figures are divided by the raw
figures measured in the same run. A later milestone adds RQ, Celery, Dramatiq,
Huey, django-q2 and BullMQ as further modules with the same three names:
``NAME``, ``BASELINE`` and ``run(ctx) -> list[Record]``.
"""

from systems import bullmq_peer, djangoq_peer, djjobs, raw

SYSTEMS = {module.NAME: module for module in (raw, djjobs, djangoq_peer, bullmq_peer)}
