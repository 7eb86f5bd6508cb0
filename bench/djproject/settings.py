"""Settings for the benchmark's Django project; Redis comes from BENCH_REDIS_URL."""

import json
import os
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS: list[str] = []
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_jobs",
    "djproject.benchapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(BENCH_DIR / ".cache" / "django-jobs-bench.sqlite3"),
        "OPTIONS": {"timeout": 20},
    }
}

# The bench starts a private redis-server and passes its URL; there is no default, so
# a stray run can never write into a Redis someone else uses.
if "BENCH_REDIS_URL" not in os.environ:
    raise RuntimeError("Set BENCH_REDIS_URL (bench/run.py does) to a Redis the bench may flush.")

JOBS = {
    "REDIS_URL": os.environ["BENCH_REDIS_URL"],
    "PREFIX": "bench",
    # bench/cluster.py --shards: the queues' options as JSON.
    "QUEUES": json.loads(os.environ.get("BENCH_QUEUES", '{"default": {}}')),
}
