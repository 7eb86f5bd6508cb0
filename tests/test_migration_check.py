"""The start-up migration check (``health.unapplied_migrations``) finds the migration
files Django's loader finds, and says what failed when it cannot tell."""

from __future__ import annotations

import logging
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from django_jobs.health import database_problems, unapplied_migrations
from django_jobs.worker.startup import check_before_start

pytestmark = pytest.mark.django_db

TESTAPP_MIGRATIONS = Path(__file__).parent / "testapp" / "migrations"


@pytest.fixture
def migrations_package(tmp_path, monkeypatch, settings):
    """Makes a package with the given files, on sys.path, testapp's migrations module."""
    name = f"migrations_{uuid.uuid4().hex[:8]}"

    def make(files: dict[str, str]) -> Path:
        package = tmp_path / name
        package.mkdir()
        for file_name, text in files.items():
            (package / file_name).write_text(textwrap.dedent(text))
        monkeypatch.syspath_prepend(str(tmp_path))
        settings.MIGRATION_MODULES = {"testapp": name}
        return package

    yield make
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


def test_a_migration_in_a_directory_the_package_adds_to_its_path_is_found(
    migrations_package, tmp_path
):
    """A package may extend its ``__path__`` in its ``__init__`` (pkgutil.extend_path,
    vendored migrations); Django's loader reads them, so the check must too."""
    extra = tmp_path / "extra_migrations"
    extra.mkdir()
    (extra / "0002_added_elsewhere.py").write_text(
        textwrap.dedent(
            """
            from django.db import migrations

            class Migration(migrations.Migration):
                dependencies = [("testapp", "0001_initial")]
                operations = []
            """
        )
    )
    migrations_package(
        {"__init__.py": f"__path__.extend([{str(TESTAPP_MIGRATIONS)!r}, {str(extra)!r}])\n"}
    )
    assert unapplied_migrations() == (
        "migrations are not applied (apps testapp): run 'python manage.py migrate'"
    )


def test_a_migration_that_cannot_be_imported_is_said_so_not_a_database_away(
    migrations_package, caplog
):
    package = migrations_package(
        {
            "__init__.py": f"__path__.append({str(TESTAPP_MIGRATIONS)!r})\n",
            "0002_needs_a_module.py": """
                import not_installed_here_opsfix  # noqa
            """,
        }
    )
    [problem] = database_problems()
    assert "database cannot be reached" not in problem
    assert problem.startswith("the migrations could not be checked (ModuleNotFoundError: ")
    assert "not_installed_here_opsfix" in problem
    assert f"{package / '0002_needs_a_module.py'}:2" in problem
    with caplog.at_level(logging.ERROR, logger="django_jobs.worker"):
        check_before_start(["default"], logging.getLogger("django_jobs.worker"))
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1
    assert said[0].startswith("the migrations could not be checked (ModuleNotFoundError")
    assert "database cannot be reached" not in said[0]
