"""The README's "Testing your jobs" example: no Redis and no worker needed.

Run with pytest and pytest-django from example_project/:
``pytest --ds=config.settings orders/test_orders.py`` (.ci/check_wheel.sh does,
against the installed wheel).
"""

import pytest

from orders.jobs import send_order_confirmation
from orders.models import Order


@pytest.mark.django_db
def test_an_order_is_confirmed_by_a_job(client, jobs):
    response = client.post(
        "/orders/",
        {"email": "ann@example.com", "item": "tea", "quantity": 2},
        content_type="application/json",
    )
    assert response.status_code == 201
    order = Order.objects.get()
    assert [job.args for job in jobs.enqueued_for(send_order_confirmation)] == [[order.id]]
    assert order.confirmation_sent_at is None  # nothing has run yet

    confirmation, crm_sync = jobs.drain()  # runs them here, and any job they enqueue
    assert confirmation.status == "succeeded"
    order.refresh_from_db()
    assert order.confirmation_sent_at is not None
    # sync_to_crm always fails: its 3 attempts run at once, then it is dead.
    assert (crm_sync.status, crm_sync.attempts) == ("dead", 3)
    assert crm_sync.error["class"] == "ConnectionError"
