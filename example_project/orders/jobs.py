"""The order jobs; django-jobs imports this module in the web process and the worker.

``send_order_confirmation`` is the everyday case: slow work taken out of the
request. ``sync_to_crm`` fails on purpose so the demo shows retries ending in a
dead letter in the admin.
"""

import logging

from django.utils import timezone

from django_jobs import Discard, job
from orders.models import Order

logger = logging.getLogger(__name__)


@job(queue="emails", attempts=5, backoff="exponential", retry_delay=1, timeout=30)
def send_order_confirmation(order_id: int) -> None:
    """Pretend to e-mail the order's confirmation, and record when it went out.

    A job runs at least once: a worker that dies mid-job has the job run again,
    so an order that is already confirmed is left alone. The log line names the
    order, never the customer's address: logs are no place for personal data.
    """
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        raise Discard(f"order {order_id} no longer exists")
    if order.confirmation_sent_at is not None:
        return
    logger.info("sent the confirmation of order %s", order.pk)
    Order.objects.filter(pk=order.pk).update(confirmation_sent_at=timezone.now())


@job(attempts=3, backoff="fixed", retry_delay=1)
def sync_to_crm(order_id: int) -> None:
    """Always fails, like a call to a CRM that is down.

    Three attempts one second apart, then the job becomes a DeadLetter row that
    someone can requeue (once the CRM is back) or discard from the admin.
    """
    raise ConnectionError(f"CRM unreachable, order {order_id} not synced")
