"""Webhook delivery at scale: 10,000 events fanned out to 100,000 deliveries, drained by the
real delivery engine in worker processes, then the latency of single events through a real
Celery worker.

    .venv/bin/python bench/events.py [--events 10000] [--workers 2] [--latency-events 200]

BENCH_SCALE multiplies the events (default 10,000).

Creates (drops first) the database ``gpu_marketplace_bench_events`` on the PostgreSQL server of
BENCH_DATABASE_SERVER (default postgres://postgres@127.0.0.1:5432) and migrates it. A receiver
process (a bare asyncio HTTP/1.1 server on 127.0.0.1, keep-alive, answering 200 at once, so it
is not what is measured) counts every request by (webhook-id, path). Then:

1. 10 tenants with 10 endpoints each (all on the receiver, one path per endpoint); 10,000
   events recorded through ``events.services.events_record`` in transactions of 500, so every
   event fans out to its tenant's 10 endpoints: 100,000 pending deliveries;
2. the drain: W worker processes each run ``events.delivery.deliveries_send_due`` until nothing
   is due (the same call the Celery task makes), timed from a common start;
3. with the queue idle, single events committed one by one (a random pause of 0-300 ms between
   them, so some fall inside the nudge throttle) and sent by a real Celery worker process that
   only the commits' nudges wake (no beat): the time from commit to the receiver.

It prints each figure beside its goal (ok/short) and exits 1 if a guarantee breaks: every
delivery succeeded with exactly one attempt, the receiver got each (webhook-id, endpoint)
exactly once, and every single event arrived. Figures go to var/bench/events.json for
bench/summary.py."""

import argparse
import json
import multiprocessing
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import row, scaled, write_results  # noqa: E402

DATABASE = "gpu_marketplace_bench_events"
SERVER = os.environ.get("BENCH_DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
os.environ["DATABASE_URL"] = f"{SERVER}/{DATABASE}"
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"  # private URLs allowed; Redis
os.environ.setdefault("LOG_LEVEL", "WARNING")
QUEUE = f"bench-events-{uuid.uuid4().hex[:8]}"  # the Celery queue of this run only
os.environ["BENCH_EVENTS_QUEUE"] = QUEUE

TENANTS = 10
ENDPOINTS_PER_TENANT = 10
RECORD_BATCH = 500
LATENCY_TENANT = 1000
GOAL_PER_SECOND = 500
GOAL_RSS_MB = 300
GOAL_P99_SECONDS = 2.0
WAIT_SECONDS = 15  # for any single event to arrive


def django_setup() -> None:
    import django

    django.setup()
    from config.celery_app import app

    app.conf.task_default_queue = os.environ["BENCH_EVENTS_QUEUE"]


def recreate_database() -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')


# --- the receiver (its own process) -----------------------------------------------------------


def receiver_main(ready, arrivals) -> None:
    """Answer every POST 200 at once and count it by (webhook-id, path); put (webhook-id,
    arrival time) of paths under /latency on ``arrivals``; GET /stats says the counts."""
    import asyncio

    counts: dict[tuple[bytes, bytes], int] = {}
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    def stats() -> bytes:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        body = json.dumps(
            {
                "requests": sum(counts.values()),
                "distinct": len(counts),
                "duplicated": sum(1 for n in counts.values() if n > 1),
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
            }
        ).encode()
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method, path, _ = lines[0].split(b" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get(b"content-length", b"0"))
                if length:
                    await reader.readexactly(length)
                if method == b"GET":
                    writer.write(stats())
                else:
                    webhook_id = headers.get(b"webhook-id", b"")
                    key = (webhook_id, path)
                    counts[key] = counts.get(key, 0) + 1
                    if path.startswith(b"/latency"):
                        arrivals.put((webhook_id.decode(), time.time()))
                    writer.write(ok)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
        ready.put(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def receiver_stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        return json.loads(response.read())


# --- the drain (worker processes) -------------------------------------------------------------


def drain_worker(barrier, results) -> None:
    django_setup()
    from django.db import connection

    from events.delivery import deliveries_send_due

    connection.ensure_connection()
    barrier.wait()
    started = time.perf_counter()
    attempts = deliveries_send_due()
    elapsed = time.perf_counter() - started
    connection.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    results.put({"attempts": attempts, "seconds": elapsed, "rss_mb": rss_mb})


def seed(port: int) -> None:
    from events.services import endpoint_create

    for tenant_id in range(1, TENANTS + 1):
        for n in range(ENDPOINTS_PER_TENANT):
            endpoint_create(tenant_id=tenant_id, url=f"http://127.0.0.1:{port}/t{tenant_id}/e{n}")


def record_events(count: int) -> float:
    from django.db import transaction

    from events.services import NewEvent, events_record

    started = time.perf_counter()
    for first in range(0, count, RECORD_BATCH):
        with transaction.atomic():
            events_record(
                events=[
                    NewEvent(
                        n % TENANTS + 1,
                        "reservation.started",
                        {"id": str(uuid.UUID(int=n)), "gpu_count": 8, "n": n},
                    )
                    for n in range(first, min(first + RECORD_BATCH, count))
                ]
            )
    return time.perf_counter() - started


def drain(workers: int) -> tuple[float, list[dict]]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers + 1)
    results = context.Queue()
    processes = [
        context.Process(target=drain_worker, args=(barrier, results)) for _ in range(workers)
    ]
    for process in processes:
        process.start()
    barrier.wait(timeout=120)  # every worker has set Django up and connected
    started = time.perf_counter()
    collected = [results.get(timeout=600) for _ in processes]
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join(timeout=30)
    return elapsed, collected


# --- latency through a real Celery worker -----------------------------------------------------


def commit_one(tenant_id: int, n: int) -> tuple[str, float]:
    """Record one event; return its id and the moment just before its commit."""
    from django.db import transaction

    from events.services import event_record

    with transaction.atomic():
        event = event_record(tenant_id=tenant_id, type="balance.low", data={"n": n})
        before_commit = time.time()
    return event.id, before_commit


def wait_arrival(arrivals, event_id: str) -> float | None:
    import queue

    deadline = time.monotonic() + WAIT_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        try:
            arrived_id, at = arrivals.get(timeout=left)
        except queue.Empty:
            return None
        if arrived_id == event_id:
            return at
    return None


def latencies(port: int, arrivals, count: int) -> tuple[list[float], int]:
    from events.services import endpoint_create

    endpoint_create(tenant_id=LATENCY_TENANT, url=f"http://127.0.0.1:{port}/latency")
    rng = random.Random(1)
    # The first event also waits for the worker to come up; it is not counted.
    event_id, _ = commit_one(LATENCY_TENANT, 0)
    deadline = time.monotonic() + 120
    while wait_arrival(arrivals, event_id) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("The Celery worker never delivered the first event.")
    measured, missing = [], 0
    for n in range(1, count + 1):
        time.sleep(rng.uniform(0, 0.3))
        event_id, committed = commit_one(LATENCY_TENANT, n)
        arrived = wait_arrival(arrivals, event_id)
        if arrived is None:
            missing += 1
        else:
            measured.append(arrived - committed)
    return measured, missing


def percentile(values: list[float], percent: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def verdict(ok: bool) -> str:
    return "ok" if ok else "short"


@contextmanager
def receiver_running():
    """The receiver process; yields its port and the queue of /latency arrivals."""
    context = multiprocessing.get_context("spawn")
    ready, arrivals = context.Queue(), context.Queue()
    receiver = context.Process(target=receiver_main, args=(ready, arrivals), daemon=True)
    receiver.start()
    try:
        yield ready.get(timeout=60), arrivals
    finally:
        receiver.terminate()
        receiver.join(timeout=10)


@contextmanager
def celery_worker_running():
    """A Celery worker process consuming only this run's queue, which the commits' nudges go
    to (no beat: a lost nudge shows as an event that never arrives). Prints its log if the
    block fails."""
    command = [str(Path(sys.executable).parent / "celery"), "-A", "config", "worker"]
    command += ["-Q", QUEUE, "-P", "solo", "--loglevel", "WARNING"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    with tempfile.TemporaryFile() as log:
        worker = subprocess.Popen(command, cwd=ROOT, env=os.environ, stdout=log, stderr=log)
        try:
            yield
        except BaseException:
            log.seek(0)
            print("Celery worker log:\n" + log.read().decode(errors="replace")[-3000:])
            raise
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()


def guarantee_problems(deliveries: int, received: dict, missing: int) -> list[str]:
    from django.db.models import Count

    from events.models import Delivery, DeliveryAttempt

    # The receiver can answer before the worker records the outcome: let the last one land.
    deadline = time.monotonic() + WAIT_SECONDS
    while Delivery.objects.filter(status="pending").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    drained = Delivery.objects.exclude(tenant_id=LATENCY_TENANT)
    statuses = dict(drained.values_list("status").annotate(n=Count("id")))
    attempts = DeliveryAttempt.objects.filter(delivery__in=drained).count()
    not_once = Delivery.objects.exclude(status="succeeded", attempts=1).count()
    problems = []
    if statuses != {"succeeded": deliveries}:
        problems.append(f"delivery statuses {statuses}, expected {deliveries:,} succeeded")
    if attempts != deliveries or not_once:
        problems.append(f"{attempts:,} attempts recorded; {not_once} deliveries not sent once")
    if received["requests"] != deliveries or received["distinct"] != deliveries:
        problems.append(
            f"the receiver got {received['requests']:,} requests for "
            f"{received['distinct']:,} (webhook-id, endpoint) pairs, expected {deliveries:,}"
        )
    if received["duplicated"]:
        problems.append(f"{received['duplicated']} (webhook-id, endpoint) pairs received twice")
    if missing:
        problems.append(f"{missing} single events did not arrive within {WAIT_SECONDS} s")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events", type=int, default=scaled(10_000), help="default 10,000 x BENCH_SCALE"
    )
    parser.add_argument("--workers", type=int, default=2, help="drain processes (default 2)")
    parser.add_argument("--latency-events", type=int, default=200)
    args = parser.parse_args()
    deliveries = args.events * ENDPOINTS_PER_TENANT

    print(f"Database {DATABASE}: recreating and migrating...", flush=True)
    recreate_database()
    django_setup()
    import redis
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=10)
    broker.ping()  # fail fast when Redis is down
    try:
        with receiver_running() as (port, arrivals):
            seed(port)
            print(f"Recording {args.events:,} events ({deliveries:,} deliveries)...", flush=True)
            recorded_seconds = record_events(args.events)
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
            broker.delete(QUEUE)  # the commits' nudges: the drain below is what is measured
            connection.close()

            print(f"Draining with {args.workers} worker processes...", flush=True)
            drain_seconds, drained = drain(args.workers)
            received = receiver_stats(port)

            print(f"{args.latency_events} single events through a Celery worker...", flush=True)
            with celery_worker_running():
                measured, missing = latencies(port, arrivals, args.latency_events)
                problems = guarantee_problems(deliveries, received, missing)
    finally:
        for key in broker.scan_iter(match=f"*{QUEUE}*"):
            broker.delete(key)

    per_second = deliveries / drain_seconds
    p50, p99 = percentile(measured, 50), percentile(measured, 99)
    print()
    print(
        f"Recorded {args.events:,} events in {recorded_seconds:.1f} s "
        f"({args.events / recorded_seconds:,.0f} events/s, "
        f"{deliveries / recorded_seconds:,.0f} deliveries/s created)"
    )
    print(
        f"Drain of {deliveries:,} deliveries by {args.workers} processes "
        f"(batch {settings.WEBHOOK_BATCH_SIZE}, {settings.WEBHOOK_CONCURRENCY} concurrent "
        f"requests each) on {os.cpu_count()} CPUs: {drain_seconds:.1f} s"
    )
    print(
        f"   deliveries/s       {per_second:8.0f}    goal >= {GOAL_PER_SECOND}/s   "
        f"{verdict(per_second >= GOAL_PER_SECOND)}"
    )
    for i, result in enumerate(drained):
        print(
            f"   worker {i} peak RSS  {result['rss_mb']:8.0f} MB goal < {GOAL_RSS_MB} MB   "
            f"{verdict(result['rss_mb'] < GOAL_RSS_MB)}   "
            f"({result['attempts']:,} attempts in {result['seconds']:.1f} s)"
        )
    print(
        f"   (the receiver used {received['cpu_seconds']:.1f} s of CPU in all: not the bottleneck)"
    )
    print(f"Commit to receiver, {len(measured)} single events through a Celery worker:")
    print(
        f"   p99 {p99:8.3f} s           goal < {GOAL_P99_SECONDS} s      "
        f"{verdict(p99 < GOAL_P99_SECONDS)}   "
        f"(p50 {p50:.3f} s, max {max(measured, default=float('nan')):.3f} s)"
    )
    print()
    rows = [
        row(
            f"webhook drain, {args.workers} workers",
            f"{per_second:.0f} deliveries/s",
            f">= {GOAL_PER_SECOND}/s",
            per_second >= GOAL_PER_SECOND,
        ),
        row(
            "webhook worker peak RSS",
            f"{max(result['rss_mb'] for result in drained):.0f} MB",
            f"< {GOAL_RSS_MB} MB",
            all(result["rss_mb"] < GOAL_RSS_MB for result in drained),
        ),
        row(
            "webhook commit-to-receiver p99",
            f"{p99:.3f} s",
            f"< {GOAL_P99_SECONDS} s",
            p99 < GOAL_P99_SECONDS,
        ),
    ]
    write_results("events", rows, guarantee_ok=not problems, problems=problems)
    if problems:
        print("FAILED: " + "; ".join(problems))
        return 1
    print(
        f"Every delivery succeeded exactly once ({deliveries:,} requests at the receiver, no "
        "duplicates); every single event arrived."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
