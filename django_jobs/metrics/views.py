"""The scrape endpoint. Open (scrapers do not log in) unless ``JOBS["METRICS_TOKEN"]``
is set; then it wants ``Authorization: Bearer <token>``."""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from django_jobs.conf import get_settings
from django_jobs.metrics.collector import JobsCollector


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = get_settings().metrics_token
    if token is not None:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), token.encode()):
            response = HttpResponse("A bearer token is required.\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="django-jobs metrics"'
            return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
