from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class DjangoJobsConfig(AppConfig):
    name = "django_jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_jobs import checks  # noqa: F401  (registers the system checks)

        # Import every installed app's jobs module so web and workers know the same
        # job names. These are the project's own modules, never names from Redis.
        autodiscover_modules("jobs")
        _install_tracing()


def _install_tracing() -> None:
    """Trace jobs with OpenTelemetry when its API is installed (extra ``otel``)."""
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return
    from django_jobs.contrib import otel

    otel.install()
