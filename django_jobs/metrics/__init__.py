"""Prometheus metrics for the whole cluster, read from Redis at each scrape (extra
``prometheus``): ``path("metrics/", include("django_jobs.metrics.urls"))``."""
