"""Enqueue driver for django-q2 (runs in its own virtualenv; see driver_cli.py).

One job is one ``async_task(noop, index)``, as django-q2's documentation writes it:
without a ``broker=`` argument each call builds its own broker, i.e. a new Redis
client and connection. With DJQ_SHARED_BROKER=1 every call is given the same
broker instead (``broker=``), the variant a caller who knows this would use.
django-q2 has no batch enqueue, so there is no ``bulk``.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djq_settings")
django.setup()

import driver_cli  # noqa: E402
from django_q.brokers import get_broker  # noqa: E402
from django_q.tasks import async_task  # noqa: E402
from djq_jobs import noop  # noqa: E402

options = {"broker": get_broker()} if os.environ.get("DJQ_SHARED_BROKER") == "1" else {}


def one(index: int, sent_us: int) -> None:
    if sent_us:
        async_task(noop, index, sent_us, **options)
    else:
        async_task(noop, index, **options)


if __name__ == "__main__":
    driver_cli.main(one)
