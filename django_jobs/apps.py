import sys

from django.apps import AppConfig
from django.conf import settings
from django.utils.module_loading import autodiscover_modules, import_string


class DjangoJobsConfig(AppConfig):
    name = "django_jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_jobs import (
            checks,  # noqa: F401  (registers the system checks)
            error_reports,
        )

        # Import every installed app's jobs module so web and workers know the same
        # job names. These are the project's own modules, never names from Redis.
        autodiscover_modules("jobs")
        if _tasks_backend_configured():
            autodiscover_modules("tasks")  # @task functions, for django.tasks
        _install_tracing()
        error_reports.install()  # Redis passwords out of error pages and e-mails


def _tasks_backend_configured() -> bool:
    """Whether TASKS uses django_jobs.tasks_backend.JobsBackend (or a subclass). Only
    then are apps' tasks modules imported here: a project on another backend may keep
    modules of that name for something else."""
    for params in getattr(settings, "TASKS", {}).values():
        try:
            backend = import_string(params["BACKEND"])
        except (ImportError, KeyError, TypeError):
            continue  # django.tasks reports a bad BACKEND when it is used
        ours = sys.modules.get("django_jobs.tasks_backend")
        if ours is not None and isinstance(backend, type) and issubclass(backend, ours.JobsBackend):
            return True
    return False


def _install_tracing() -> None:
    """Trace jobs with OpenTelemetry when its API is installed (extra ``otel``)."""
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return
    from django_jobs.contrib import otel

    otel.install()
