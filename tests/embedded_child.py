"""A process of a test project that uses the embedded Redis, as runserver or runjobs
would: it waits for a go file (so several start at once), optionally enqueues a job,
then prints which server it got as JSON."""

import argparse
import json
import time
from pathlib import Path

import django

django.setup()

from django_jobs.broker.connection import get_client  # noqa: E402
from tests.testapp.jobs import record  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--go", type=Path)
parser.add_argument("--enqueue-record")
options = parser.parse_args()

print("ready", flush=True)
deadline = time.monotonic() + 30
while options.go and not options.go.exists():
    if time.monotonic() > deadline:
        raise SystemExit("no go file within 30s")
    time.sleep(0.005)
job_id = None
if options.enqueue_record:
    job_id = record.enqueue(options.enqueue_record).id
info = get_client().info("server")
print(json.dumps({"pid": info["process_id"], "executable": info["executable"], "job_id": job_id}))
