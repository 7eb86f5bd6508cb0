"""A tiny JSON API: save the order, enqueue its jobs, answer at once.

The response never waits for the e-mail or the CRM: the jobs run in the
``runjobs`` worker, and ``GET /orders/<id>/?job=<job_id>`` shows how they went.
"""

import json
from typing import Any

from django import forms
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from django_jobs.handle import JobHandle, JobNotFound
from django_jobs.models import DeadLetter
from orders.jobs import send_order_confirmation, sync_to_crm
from orders.models import Order

MAX_JOB_ID_LENGTH = 64


class OrderForm(forms.ModelForm):
    class Meta:
        model = Order
        fields = ["email", "item", "quantity"]


def _error(message: str, *, status: int = 400, code: str = "invalid") -> JsonResponse:
    """An error in the same shape as a form's errors, so clients parse one format."""
    return JsonResponse(
        {"errors": {"__all__": [{"message": message, "code": code}]}}, status=status
    )


# CSRF-exempt only because this demo API is called with curl, without a session
# cookie. A real API would authenticate with a token instead; the admin and every
# other view keep Django's CSRF protection.
@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    try:
        data = json.loads(request.body)
    except ValueError:
        return _error("The body must be a JSON object.")
    if not isinstance(data, dict):
        return _error("The body must be a JSON object.")
    form = OrderForm(data)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    # One transaction: the jobs reach Redis when the order is committed (so the
    # worker always finds it), never without it, and not lost if Redis is down
    # (they wait in the outbox). Jobs get the order's id, never the instance:
    # arguments are JSON.
    with transaction.atomic():
        order = form.save()
        confirmation = send_order_confirmation.enqueue(order.id)
        crm_sync = sync_to_crm.enqueue(order.id)
    status_url = reverse("order-detail", args=[order.id])
    return JsonResponse(
        {
            "order_id": order.id,
            "job_id": confirmation.id,
            "crm_job_id": crm_sync.id,
            "status_url": f"{status_url}?job={confirmation.id}",
        },
        status=201,
    )


@require_GET
def order_detail(request: HttpRequest, order_id: int) -> JsonResponse:
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return _error(f"There is no order {order_id}.", status=404, code="not_found")
    body: dict[str, Any] = {
        "order": {
            "id": order.id,
            "item": order.item,
            "quantity": order.quantity,
            "created_at": order.created_at,
            "confirmation_sent_at": order.confirmation_sent_at,
        }
    }
    job_id = request.GET.get("job")
    if job_id:
        if len(job_id) > MAX_JOB_ID_LENGTH:
            return _error(f"A job id has at most {MAX_JOB_ID_LENGTH} characters.")
        body["job"] = _job_status(request, job_id)
    return JsonResponse(body)


def _job_status(request: HttpRequest, job_id: str) -> dict[str, Any]:
    """What a client may know about a job: its state, attempts and last error.

    A demo shortcut: any job id is looked up. A real view would check that the
    job belongs to this order (store the id on it) before showing anything.
    """
    try:
        handle = JobHandle.get(job_id)
    except JobNotFound:
        return {"id": job_id, "status": "unknown"}
    error = handle.error
    status: dict[str, Any] = {
        "id": handle.id,
        "name": handle.name,
        "queue": handle.queue,
        "status": handle.status,
        "attempts": handle.attempts,
        "error": f"{error['class']}: {error['message']}" if error else None,
        "dead_letter_url": None,
    }
    letter = DeadLetter.objects.filter(job_id=handle.id).first()
    if letter is not None:
        change_url = reverse("admin:django_jobs_deadletter_change", args=[letter.pk])
        status["dead_letter_url"] = request.build_absolute_uri(change_url)
    return status
