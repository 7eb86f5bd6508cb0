#!/usr/bin/env bash
# Builds the distribution with `python -m build`, checks the wheel's contents
# (.ci/wheel_contents.py), then installs THAT wheel, not an editable install (which
# would hide missing package data), into a clean virtualenv and runs the example
# project against it: `manage.py check`, a smoke test that reads the package's
# jobs, scripts, templates and migrations from the installed wheel, and the
# README's test through the installed pytest plugin.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== building the wheel =="
# From a copy of the files git knows (committed or not, ignored ones left out):
# a stale *.egg-info of this checkout would otherwise feed setuptools a file list
# that hides package data missing from pyproject.toml.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard \
  | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$work/src"
"$python" -m build --outdir "$work/dist" "$work/src" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; exit 1; }
wheel=$(ls "$work"/dist/*.whl)
"$python" .ci/wheel_contents.py "$wheel"

echo "== installing it into a clean virtualenv =="
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel" django-environ \
  pytest pytest-django

# A copy of the example, so nothing of this checkout is on the import path.
mkdir "$work/example"
cp -r example_project/manage.py example_project/config example_project/orders "$work/example/"
rm -rf "$work/example/orders/__pycache__"
cd "$work/example"
export DEBUG=True REDIS_URL=redis://127.0.0.1:6379/0 DATABASE_URL="sqlite:///$work/example.sqlite3"
"$work/venv/bin/python" manage.py check
"$work/venv/bin/python" manage.py shell -c '
import django_jobs
from django.db.migrations.loader import MigrationLoader
from django.template.loader import get_template
from django_jobs.broker import scripts
from django_jobs.registry import registered_names

assert "/site-packages/" in django_jobs.__file__, django_jobs.__file__
print("registered jobs:", ", ".join(registered_names()))
assert "orders.jobs.send_order_confirmation" in registered_names()
for name in scripts.NAMES:
    assert "-- include:" not in scripts.source(name), name  # includes were found
get_template("admin/django_jobs/deadletter/change_form.html")
migrations = sorted(n for app, n in MigrationLoader(None).disk_migrations if app == "django_jobs")
print("django_jobs migrations:", ", ".join(migrations))
assert migrations and migrations[0] == "0001_initial"
print("the installed wheel works")
'
# The README's test, through the pytest plugin the wheel's entry point registers;
# REDIS_URL points where nothing listens: the test needs no Redis.
REDIS_URL=redis://127.0.0.1:1/0 "$work/venv/bin/python" -m pytest -q -p no:cacheprovider \
  --ds=config.settings orders/test_orders.py
