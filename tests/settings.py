"""Settings for the test suite: DJANGO_JOBS_TEST_DB=sqlite (default) or postgres."""

import json
import os
import tempfile
from importlib.util import find_spec
from pathlib import Path

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_db = os.environ.get("DJANGO_JOBS_TEST_DB", "sqlite")
if _db == "postgres":
    _test_name = os.environ.get("DJANGO_JOBS_TEST_DB_NAME", "test_django_jobs")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "USER": os.environ.get("PGUSER", "postgres"),
            # Worker subprocesses started by tests connect straight to the test database.
            "NAME": _test_name if os.environ.get("DJANGO_JOBS_USE_TEST_DB") else "test",
            "TEST": {"NAME": _test_name},
        }
    }
elif _db == "sqlite":
    # A file, not :memory:, so worker threads and subprocesses see the same database.
    _path = os.environ.get(
        "DJANGO_JOBS_TEST_DB_NAME",
        str(Path(tempfile.gettempdir()) / f"django_jobs_test_{os.getpid()}.sqlite3"),
    )
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _path,
            "TEST": {"NAME": _path},
            # IMMEDIATE: take the write lock at BEGIN, so concurrent writers wait for
            # each other instead of failing with "database is locked".
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
else:
    raise RuntimeError(f"DJANGO_JOBS_TEST_DB must be sqlite or postgres, not {_db!r}")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",  # the admin's CSS for the browser tests' live server
    "django_jobs",
    "tests.testapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
STATIC_URL = "/static/"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
JOBS = {
    "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    "PREFIX": os.environ.get("DJANGO_JOBS_TEST_PREFIX", "jobstest"),
    "LEASE_SECONDS": float(os.environ.get("DJANGO_JOBS_TEST_LEASE", "30")),
}
if os.environ.get("DJANGO_JOBS_TEST_DEFAULT_TIMEOUT"):  # for tasks, which set no timeout
    JOBS["DEFAULT_TIMEOUT"] = float(os.environ["DJANGO_JOBS_TEST_DEFAULT_TIMEOUT"])
if os.environ.get("DJANGO_JOBS_TEST_RESULT_TTL"):  # the soak run keeps finished jobs briefly
    JOBS["RESULT_TTL"] = int(os.environ["DJANGO_JOBS_TEST_RESULT_TTL"])
if os.environ.get("DJANGO_JOBS_TEST_REDIS_OPTIONS"):  # TLS files etc. of a test's server
    JOBS["REDIS_OPTIONS"] = json.loads(os.environ["DJANGO_JOBS_TEST_REDIS_OPTIONS"])
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_jobs": {"handlers": ["console"], "level": "INFO"}},
}

# The Tasks backend's tests (tests/test_tasks_backend.py): django.tasks on Django >= 6.0,
# the django-tasks backport on 5.2. Without either, TASKS is unused and they skip.
_TASKS_PACKAGE = "django.tasks" if find_spec("django.tasks") else "django_tasks"
TASKS = {
    "default": {
        "BACKEND": "django_jobs.tasks_backend.JobsBackend",
        "QUEUES": ["default", "emails"],
    },
    "quick_retries": {
        "BACKEND": "django_jobs.tasks_backend.JobsBackend",
        "OPTIONS": {"attempts": 3, "backoff": "fixed", "retry_delay": 0},
    },
    "immediate": {"BACKEND": f"{_TASKS_PACKAGE}.backends.immediate.ImmediateBackend"},
}
