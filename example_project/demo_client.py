"""Drive the running example as any HTTP client would: post orders, watch their jobs.

run.sh starts the web server and the worker, then runs this script. It exits 0
once every confirmation has been sent and every CRM sync has become a dead
letter, and 1 if that has not happened by the deadline. Only the public JSON API
is used, so what it prints is what a client of the example would see.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

DEMO_ORDERS = [
    {"email": "ada@example.com", "item": "teapot", "quantity": 1},
    {"email": "grace@example.com", "item": "mug", "quantity": 4},
    {"email": "alan@example.com", "item": "kettle", "quantity": 2},
]
BAD_ORDER = {"email": "not-an-address", "item": "", "quantity": 0}
POLL_SECONDS = 0.2
FINAL_STATES = ("succeeded", "dead", "discarded", "cancelled")


@dataclass
class WatchedJob:
    """A job the demo waits for, and the last state it printed for it."""

    order_id: int
    job_id: str
    label: str
    expected_state: str
    last_seen: tuple[Any, ...] = ()


def call(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One HTTP request; returns (status, JSON body) for 4xx/5xx answers too."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, text[:300]


def wait_for_server(base_url: str, deadline: float) -> bool:
    """Poll until the web server answers at all (a 404 counts), or the deadline passes."""
    while time.monotonic() < deadline:
        try:
            call("GET", f"{base_url}/orders/0/")
            return True
        except (urllib.error.URLError, ConnectionError):
            time.sleep(POLL_SECONDS)
    return False


def post_orders(base_url: str) -> list[WatchedJob] | None:
    status, body = call("POST", f"{base_url}/orders/", BAD_ORDER)
    print(f"POST /orders/ (a bad order) -> {status} {json.dumps(body)}")
    if status != 400:
        print("expected 400 for a bad order")
        return None
    watched = []
    for order in DEMO_ORDERS:
        status, body = call("POST", f"{base_url}/orders/", order)
        print(
            f"POST /orders/ ({order['quantity']} x {order['item']}) -> {status} {json.dumps(body)}"
        )
        if status != 201:
            return None
        order_id = body["order_id"]
        watched.append(WatchedJob(order_id, body["job_id"], "confirmation e-mail", "succeeded"))
        watched.append(WatchedJob(order_id, body["crm_job_id"], "CRM sync", "dead"))
    return watched


def check(base_url: str, job: WatchedJob) -> bool | None:
    """True once the job reached what the demo expects, False if it never will."""
    status, body = call("GET", f"{base_url}/orders/{job.order_id}/?job={job.job_id}")
    if status != 200:
        print(f"GET order {job.order_id} -> {status} {body}")
        return False
    state = body["job"]
    seen = (state["status"], state.get("attempts"))
    if seen != job.last_seen:
        job.last_seen = seen
        detail = f", last error {state['error']}" if state.get("error") else ""
        print(
            f"  order {job.order_id} {job.label}: {state['status']} "
            f"(attempt {state.get('attempts')}{detail})"
        )
    if state["status"] != job.expected_state:
        return False if state["status"] in FINAL_STATES else None
    if job.expected_state == "dead":
        # The row is committed just after the job dies in Redis: wait for it.
        if not state.get("dead_letter_url"):
            return None
        print(f"  order {job.order_id} {job.label}: dead letter at {state['dead_letter_url']}")
        return True
    sent_at = body["order"]["confirmation_sent_at"]
    if not sent_at:
        return False
    print(f"  order {job.order_id}: confirmation sent at {sent_at}")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--timeout", type=float, default=60, help="seconds for the whole demo")
    args = parser.parse_args()
    base_url = args.base_url.rstrip("/")
    deadline = time.monotonic() + args.timeout

    if not wait_for_server(base_url, deadline):
        print(f"the web server at {base_url} did not answer within {args.timeout:.0f}s")
        return 1
    watched = post_orders(base_url)
    if watched is None:
        return 1
    print("waiting for the worker ...")
    pending = list(watched)
    while pending and time.monotonic() < deadline:
        still_pending = []
        for job in pending:
            outcome = check(base_url, job)
            if outcome is False:
                print(
                    f"order {job.order_id} {job.label}: ended {job.last_seen[0]}, not as expected"
                )
                return 1
            if outcome is None:
                still_pending.append(job)
        pending = still_pending
        if pending:
            time.sleep(POLL_SECONDS)
    if pending:
        names = ", ".join(f"order {job.order_id} {job.label}" for job in pending)
        print(f"timed out after {args.timeout:.0f}s still waiting for: {names}")
        return 1
    print(
        f"{len(DEMO_ORDERS)} confirmations sent; {len(DEMO_ORDERS)} CRM syncs "
        "are dead letters after 3 attempts each."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
