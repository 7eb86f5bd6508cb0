#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: makes a virtualenv, installs the
# package with its test dependencies, makes sure Redis and PostgreSQL are up
# (starting or installing them if not), then runs pytest on SQLite and on PostgreSQL
# (tests marked redis_only on the first database only).
#
#   bash tests/run.sh              # everything, both databases
#   bash tests/run.sh -m 'not slow' -x   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
DATABASES_TO_TEST=${DATABASES_TO_TEST:-"sqlite postgres"}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[test]"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "$@" >/dev/null
}
port_open() { "$VENV/bin/python" -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null; }
wait_for_port() {
  for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.2; done
  echo "Nothing answers on 127.0.0.1:$1" >&2; return 1
}

if ! port_open 6379; then
  command -v redis-server >/dev/null || apt_install redis-server
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for_port 6379
fi

if [[ " $DATABASES_TO_TEST " == *" postgres "* ]] && ! port_open 5432; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  wait_for_port 5432
fi

# Tests start servers of their own (TLS, ACL, Sentinel, a Redis Cluster made with
# redis-cli) with certificates made by openssl.
command -v redis-server >/dev/null || apt_install redis-server
command -v redis-cli >/dev/null || apt_install redis-tools
command -v openssl >/dev/null || apt_install openssl
# The admin browser tests drive Debian's chromium (Playwright never downloads one).
command -v chromium >/dev/null || apt_install chromium

# Tests marked redis_only check what does not depend on the database (Redis' or
# the processes' behaviour): they run on the first database only (tests/conftest.py
# deselects them on the others and says how many); DJANGO_JOBS_TEST_SKIP_REDIS_ONLY=1
# leaves them out of the first too. A database left with no test (exit 5) is fine.
status=0
skip_redis_only=${DJANGO_JOBS_TEST_SKIP_REDIS_ONLY:-0}
for db in $DATABASES_TO_TEST; do
  echo "== tests on $db =="
  DJANGO_JOBS_TEST_DB=$db DJANGO_JOBS_TEST_SKIP_REDIS_ONLY=$skip_redis_only \
    "$VENV/bin/python" -m pytest "$@" || status=$?
  if [ "$status" = 5 ] && [ "$skip_redis_only" = 1 ]; then
    echo "No test left on $db once the redis_only ones are deselected."
    status=0
  fi
  [ "$status" = 0 ] || break
  skip_redis_only=1
done
exit "$status"
