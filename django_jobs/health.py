"""Is this deployment able to run jobs right now? For ``manage.py jobs health``
(container probes) and anything else that wants the same answer.

Each problem is one line that says what is wrong and what to do; no problems
means healthy. Checks that need Redis are skipped once Redis is found away (that
is already the problem to report).
"""

from __future__ import annotations

import pkgutil
import traceback
import uuid
from importlib import import_module

from django.apps import apps
from django.db import DEFAULT_DB_ALIAS, connections
from django.db import Error as DatabaseError
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from redis.exceptions import RedisError

from django_jobs import queues
from django_jobs.broker.connection import access_problem, get_broker
from django_jobs.conf import get_settings


def problems() -> list[str]:
    found = database_problems()
    try:
        broker = get_broker()  # a Redis Cluster client connects as it is made
        broker.probe_write(get_settings().prefix)
    except RedisError as error:
        return [
            *found,
            f"Redis refuses writes or cannot be reached ({type(error).__name__}: {error})",
        ]
    # An ACL user may write a key and still not run scripts: try what a worker does.
    refused = access_problem(list(get_settings().queues), f"health:{uuid.uuid4().hex}")
    if refused:
        return [*found, refused]
    if not found:  # the queues' state counts dead letters, in the database
        found += _queue_problems()
    return found


def unapplied_migrations() -> str | None:
    """What ``migrate`` would still do, or None; raises when the database is away
    or a migration cannot be imported (``migration_check_failure`` says which).

    When every migration file is recorded as applied (a deployed project), nothing
    is pending, and that is known without importing a migration: Django's loader
    imports every app's migration modules, which a worker then keeps for its whole
    life (0.7 MB in the test project, many MB with hundreds of migrations).
    Anything else (a new file, a squashed migration not recorded) is left to
    Django's executor, which reads the graph.
    """
    connection = connections[DEFAULT_DB_ALIAS]
    on_disk = _migration_files()
    if on_disk is not None and on_disk <= set(MigrationRecorder(connection).applied_migrations()):
        return None
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    pending = sorted({migration.app_label for migration, _ in plan})
    if not pending:
        return None
    return f"migrations are not applied (apps {', '.join(pending)}): run 'python manage.py migrate'"


def _migration_files() -> set[tuple[str, str]] | None:
    """(app label, name) of each migration file on disk, found as Django's loader
    finds them; None when only the loader can tell (a migrations module that cannot
    be imported, one named in MIGRATION_MODULES that is not there).

    Each migrations package is imported, as the loader imports it, so directories
    its ``__init__`` adds to ``__path__`` count; its migration modules are not."""
    found: set[tuple[str, str]] = set()
    for app_config in apps.get_app_configs():
        module_name, explicit = MigrationLoader.migrations_module(app_config.label)
        if module_name is None:
            continue  # MIGRATION_MODULES says: no migrations
        try:
            module = import_module(module_name)
        except ModuleNotFoundError as error:
            if explicit or "migrations" not in (error.name or "").split("."):
                return None  # the loader says what is wrong
            continue  # an app without migrations
        except ImportError:
            return None
        path = getattr(module, "__path__", None)
        namespace = getattr(module, "__file__", None) is None and not isinstance(path, list)
        if path is None or namespace:
            continue  # a module, or a namespace package: no migrations for the loader
        found.update(
            (app_config.label, name)
            for _, name, is_package in pkgutil.iter_modules(path)
            if not is_package and name[0] not in "_~"
        )
    return found


def migration_check_failure(error: Exception) -> str:
    """What stopped ``unapplied_migrations``: the database, or something else (a
    migration that imports a module not installed here, a missing database driver),
    said as it is, with where it was raised."""
    if isinstance(error, DatabaseError):
        return f"the database cannot be reached ({type(error).__name__}: {error})"
    return f"the migrations could not be checked ({_what_and_where(error)})"


def _what_and_where(error: Exception) -> str:
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith("<frozen ")
    ]
    where = f", in {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def database_problems() -> list[str]:
    try:
        pending = unapplied_migrations()
    except Exception as error:
        return [migration_check_failure(error)]
    return [pending] if pending else []


def _queue_problems() -> list[str]:
    live = [worker for worker in queues.workers(current_jobs=False) if not worker.stale]
    found = []
    for status in queues.all_queue_statuses():
        served = any(status.name in worker.queues for worker in live)
        if status.waiting and not served and not status.paused:
            found.append(
                f"queue {status.name!r} has {status.waiting} waiting job(s) and no live "
                "worker serves it: start 'python manage.py runjobs' for it"
            )
        if status.over_latency:
            found.append(
                f"queue {status.name!r}: its oldest job has waited "
                f"{status.oldest_waiting_seconds:.0f}s, over its max_latency of "
                f"{status.max_latency:g}s: add workers or find what holds them"
            )
    return found
