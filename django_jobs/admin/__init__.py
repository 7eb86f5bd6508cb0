"""The dashboard, one module per page. Every action goes through the Python API
(:mod:`django_jobs.dead_letters`, the models), needs its own permission, is a POST
with CSRF, and is recorded in the admin log. No page nests one form in another
(browsers drop the inner one): buttons outside their form name it with ``form=``."""

from django_jobs.admin import dead_letters, queues, records, schedules

__all__ = ["dead_letters", "queues", "records", "schedules"]
