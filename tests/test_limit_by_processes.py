"""Per-key lanes across real worker processes: a key's backlog never delays
another key, one key's jobs run one at a time in enqueue order (through retries
and a kill -9), and RateLimited holds only its key."""

from __future__ import annotations

import os
import signal

import pytest

from django_jobs.broker.connection import get_broker
from tests.helpers import given_back_rate_limited, poll, serving
from tests.test_flow_processes import most_running_at_once
from tests.testapp import jobs

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def stop(worker_processes, workers) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker_processes.wait(worker, timeout=60) is not None


def test_a_key_with_ten_thousand_jobs_at_two_a_second_never_delays_another_key(
    redis_client, worker_processes
):
    done = f"{jobs.spans_key()}:done"
    workers = [worker_processes.start("--concurrency", "4") for _ in range(2)]
    jobs.two_a_second_per_key.enqueue_many([(f"A:{n}",) for n in range(10_000)])
    poll(lambda: redis_client.hlen(done) >= 21, timeout=60)  # A's burst, then 2/s
    enqueued_at = get_broker().server_time_ms()
    jobs.two_a_second_per_key.enqueue_many([(f"B:{n}",) for n in range(20)])
    poll(lambda: len([k for k in redis_client.hkeys(done) if k.startswith("B:")]) == 20, timeout=30)
    finished = [int(v) for k, v in redis_client.hgetall(done).items() if k.startswith("B:")]
    assert max(finished) - enqueued_at <= 3000
    # A kept to its rate meanwhile: its burst of 21, then 2 a second.
    a_done = [int(v) for k, v in redis_client.hgetall(done).items() if k.startswith("A:")]
    assert len(a_done) <= 21 + 2 * (max(a_done) - min(a_done)) / 1000 + 1
    stop(worker_processes, workers)
    get_broker().purge("default", 60)


def per_key_events(events: list[str], partition: str) -> list[str]:
    return [e for e in events if e.split()[0] == "killed" or e.split()[1].startswith(partition)]


def check_one_at_a_time_in_order(events: list[str], partition: str, total: int) -> None:
    mine = per_key_events(events, partition + ":")
    assert most_running_at_once(mine) == 1
    starts = [int(e.split()[1].split(":")[1]) for e in mine if e.startswith("start")]
    assert starts == sorted(starts)  # a retry or a rerun repeats its number, never goes back
    assert sorted(set(starts)) == list(range(total))


def test_one_keys_jobs_run_one_at_a_time_in_enqueue_order_over_three_processes(
    redis_client, worker_processes
):
    spans = jobs.spans_key()
    jobs.in_order.enqueue_many([("P", n, 0.002) for n in range(200)])
    jobs.in_order.enqueue_many([(f"Q{n % 4}", n, 0.002) for n in range(40)])
    workers = [worker_processes.start("--concurrency", "4") for _ in range(3)]

    def ended() -> int:
        return sum(1 for e in redis_client.lrange(spans, 0, -1) if e.startswith("end"))

    poll(lambda: ended() >= 240 + 8 + 2, timeout=120)  # with the first-attempt failures
    events = redis_client.lrange(spans, 0, -1)
    check_one_at_a_time_in_order(events, "P", 200)
    # Other keys ran beside it: some Q job started while P ran.
    first_p_end = next(i for i, e in enumerate(events) if e.startswith("end P:"))
    last_p_start = max(i for i, e in enumerate(events) if e.startswith("start P:"))
    assert any(e.startswith("start Q") for e in events[first_p_end:last_p_start])
    stop(worker_processes, workers)


def test_a_keys_slot_comes_back_after_a_kill_and_its_order_holds(redis_client, worker_processes):
    spans = jobs.spans_key()
    jobs.in_order.enqueue_many([(p, n, 0.2) for n in range(6) for p in ("K", "L")])
    workers = [
        worker_processes.start("--concurrency", "2", DJANGO_JOBS_TEST_LEASE="2") for _ in range(2)
    ]

    def a_running_pid() -> int | None:
        events = [e.split() for e in redis_client.lrange(spans, 0, -1)]
        ended = {e[1] for e in events if e[0] == "end"}
        pids = [int(e[2]) for e in events if e[0] == "start" and e[1] not in ended]
        return pids[0] if pids else None

    victim = poll(a_running_pid, timeout=60)
    os.kill(victim, signal.SIGKILL)
    redis_client.rpush(spans, f"killed {victim}")
    survivors = [w for w in workers if w.pid != victim]
    if len(survivors) == len(workers):  # the victim was a child: its supervisor remains
        survivors = workers

    def ended_keys() -> set[str]:
        return {e.split()[1] for e in redis_client.lrange(spans, 0, -1) if e.startswith("end")}

    poll(lambda: len(ended_keys()) == 12, timeout=120)
    events = redis_client.lrange(spans, 0, -1)
    for partition in ("K", "L"):
        check_one_at_a_time_in_order(events, partition, 6)
    stop(worker_processes, survivors)


def test_rate_limited_holds_only_its_key():
    held = jobs.keyed_answers_429_once.enqueue("A", 1.0)
    with serving(concurrency=2):
        released = given_back_rate_limited(held)
        other_key = jobs.keyed_answers_429_once.enqueue("B", 0)
        same_key = jobs.keyed_answers_429_once.enqueue("A", 0)
        assert held.held_back.startswith("waiting: key A at its limit until")
        poll(lambda: other_key.refresh().status == "succeeded", timeout=10)
        poll(lambda: held.refresh().status == "succeeded", timeout=10)
        poll(lambda: same_key.refresh().status == "succeeded", timeout=10)
    broker = get_broker()
    data = broker.get_job("default", held.id)
    assert data["attempt"] == "1"  # no attempt used
    hold_ends = released["finished_at"] + 1000
    assert int(data["started_at"]) >= hold_ends
    # By Redis' clock: only key A was held; key B started within the hold.
    assert int(broker.get_job("default", other_key.id)["started_at"]) < hold_ends
    assert int(broker.get_job("default", same_key.id)["started_at"]) >= hold_ends
