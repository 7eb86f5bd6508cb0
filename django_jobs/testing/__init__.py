"""Tools for testing code that enqueues jobs, without Redis or a worker.

- ``JOBS["EAGER"] = True`` runs every job inline at enqueue (:mod:`.eager`).
- The pytest fixture ``jobs`` (:mod:`.plugin`, loaded through the ``pytest11``
  entry point) records what a test enqueues and runs it on ``jobs.drain()``
  (:mod:`.recorder`).

Both hook into one place, ``django_jobs.enqueueing.write``, after the arguments
were checked and serialised as for Redis, so a non-JSON argument fails the same way.
"""
