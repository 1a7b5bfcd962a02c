"""Booking throughput against PostgreSQL: the booking service against the bare booking
transaction on the same tables, in the same run.

    .venv/bin/python bench/booking.py [--clients 8] [--seconds 8] [--pools 16]

C client processes (each with its own database connection, so the GIL is not what is measured)
book 8-GPU windows of 1-8 h as fast as they can for T seconds, in two scenarios:

- spread: random windows on N pools over a week (little lock contention between clients);
- hot: random windows on one pool over one day (every client fights for the same ledger rows;
  the pool is large enough that refusals stay rare, so bookings are compared with bookings).

Each scenario runs twice on a freshly seeded catalogue, with the same clients drawing the same
windows (the same random seeds):

1. bare: the booking transaction in raw SQL through psycopg, nothing else: lock the pool (only
   to create the window's missing ledger rows, as the service does), lock the window's ledger
   rows in hour order, check the free GPUs, add to ``booked``, insert the reservation and its
   placement. This is the ceiling.
2. service: ``marketplace.services.booking.reservation_create`` (Django set up in each client).

It prints bookings per second, p50/p99 latency and the refusals of both, and the service's share
of the bare rate (goals: >= 12 % spread over many pools, >= 30 % on one hot pool), then checks
the guarantee on the data each run produced (bench/benchlib.py): every ledger hour within
capacity, every hour's booked GPUs equal to the placements, every reservation holding what it
bought. It exits non-zero if a check fails or a request ended in anything but a booking or a
refusal (a deadlock, say). Figures go to var/bench/booking.json for bench/summary.py.

BENCH_SCALE multiplies the measuring time (default 8 s per run, four runs).

It uses its own database (bench_booking, or BENCH_DATABASE_URL), created and migrated on first
use and emptied of pools, tenants and reservations before each run."""

import argparse
import multiprocessing
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    SCALE,
    django_ledger_violations,
    percentile,
    row,
    verdict,
    write_results,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH_DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_booking"
)
GPU_MODEL = "h100-sxm-80gb"
GOALS = {"spread": 0.12, "hot": 0.30}  # the service's bookings/s against the bare ones


def django_setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    os.environ["DATABASE_URL"] = BENCH_DATABASE_URL
    import django

    django.setup()


def database_create_if_missing() -> None:
    import psycopg

    url = urlsplit(BENCH_DATABASE_URL)
    name = url.path.lstrip("/")
    admin = psycopg.connect(
        host=url.hostname,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname="postgres",
        autocommit=True,
    )
    with admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            print(f"Creating database {name}...")
            admin.execute(f'CREATE DATABASE "{name}"')


@dataclass
class Scenario:
    name: str
    pools: int
    nodes_per_pool: int
    span_hours: int
    description: str


@dataclass
class ClientResult:
    latencies_ms: list[float] = field(default_factory=list)
    booked: int = 0
    insufficient: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    seconds: float
    latencies_ms: list[float]
    booked: int
    insufficient: int
    errors: list[str]
    violations: dict[str, int]

    @property
    def per_second(self) -> float:
        return self.booked / self.seconds


def seed(scenario: Scenario, clients: int) -> tuple[list[int], list[str]]:
    """A fresh catalogue: ``scenario.pools`` pools of 8-GPU nodes and one tenant per client."""
    from django.db import connection

    from capacity.models import CapacityPool, GpuModel, Provider, Region
    from core.timeutils import utcnow
    from marketplace.models import PoolPrice, Tenant

    with connection.cursor() as cursor:
        # CASCADE empties everything that refers to them: reservations, ledger, keys, invoices.
        cursor.execute(
            "TRUNCATE marketplace_tenant, capacity_capacitypool, capacity_region, "
            "capacity_provider CASCADE"
        )
    gpu, _ = GpuModel.objects.get_or_create(
        slug=GPU_MODEL, defaults={"vendor": "nvidia", "name": "H100 SXM 80GB", "memory_gb": 80}
    )
    provider = Provider.objects.create(name="Bench", slug="bench", kind="neocloud")
    region = Region.objects.create(provider=provider, code="bench-1", name="Bench", country="US")
    now = utcnow()
    pools = CapacityPool.objects.bulk_create(
        [
            CapacityPool(
                slug=f"bench-{i:03d}",
                region=region,
                gpu_model=gpu,
                gpus_per_node=8,
                node_count=scenario.nodes_per_pool,
                available_from=now - timedelta(days=1),
                available_until=now + timedelta(days=400),
                cost_per_gpu_hour=Decimal("2.0000"),
            )
            for i in range(scenario.pools)
        ]
    )
    PoolPrice.objects.bulk_create(
        PoolPrice(pool=pool, currency="USD", price_per_gpu_hour=Decimal("3.0000")) for pool in pools
    )
    tenants = Tenant.objects.bulk_create(
        [
            Tenant(
                name=f"Bench client {i}",
                slug=f"bench-client-{i}",
                credit_limit=Decimal("100000000000.00"),
                max_gpus=10_000_000,
            )
            for i in range(clients)
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return [tenant.pk for tenant in tenants], [pool.slug for pool in pools]


WARM_UP_OFFSET = 200 * 24  # hours: one unmeasured booking per client, far from the others


def windows(index: int, pool_slugs: list[str], span_hours: int):
    """Client ``index``'s endless draw of (pool slug, first hour offset, hours): the same in
    the bare and the service run. The first one warms the client up (not measured)."""
    rng = random.Random(index)
    yield pool_slugs[0], WARM_UP_OFFSET + index, 1
    while True:
        yield rng.choice(pool_slugs), rng.randrange(span_hours), rng.randint(1, 8)


class Refused(Exception):
    pass


def bare_client(
    index: int,
    tenant_id: int,
    pool_slugs: list[str],
    span_hours: int,
    seconds: float,
    barrier,
    results,
) -> None:
    """One client process on the bare booking transaction (psycopg, no Django)."""
    import uuid
    from datetime import UTC, datetime

    import psycopg

    result = ClientResult()
    url = urlsplit(BENCH_DATABASE_URL)
    conn = psycopg.connect(
        host=url.hostname,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.path.lstrip("/"),
    )
    pools = {
        slug: (pool_id, price)
        for slug, pool_id, price in conn.execute(
            "SELECT p.slug, p.id, pp.price_per_gpu_hour FROM capacity_capacitypool p "
            "JOIN marketplace_poolprice pp ON pp.pool_id = p.id AND pp.currency = 'USD'"
        )
    }
    conn.commit()
    hour = timedelta(hours=1)
    now = datetime.now(UTC)
    first_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    draw = windows(index, pool_slugs, span_hours)
    deadline = None
    while deadline is None or time.monotonic() < deadline:
        if deadline is None and result.latencies_ms:  # warmed up
            result = ClientResult()
            barrier.wait()
            deadline = time.monotonic() + seconds
        slug, offset, length = next(draw)
        pool_id, price = pools[slug]
        start = first_hour + offset * hour
        end = start + length * hour
        gpus = 8
        began = time.perf_counter()
        try:
            with conn.transaction():
                existing = conn.execute(
                    "SELECT count(*) FROM capacity_poolhour "
                    "WHERE pool_id = %s AND hour >= %s AND hour < %s",
                    [pool_id, start, end],
                ).fetchone()[0]
                if existing < length:
                    (capacity,) = conn.execute(
                        "SELECT gpus_per_node * node_count - reserved_gpus "
                        "FROM capacity_capacitypool WHERE id = %s FOR NO KEY UPDATE",
                        [pool_id],
                    ).fetchone()
                    conn.execute(
                        "INSERT INTO capacity_poolhour (pool_id, hour, capacity, booked, excess) "
                        "SELECT %s, hour, %s, 0, 0 FROM generate_series("
                        "%s::timestamptz, %s::timestamptz - interval '1 hour', interval '1 hour'"
                        ") AS hour ON CONFLICT (pool_id, hour) DO NOTHING",
                        [pool_id, capacity, start, end],
                    )
                (free,) = conn.execute(
                    "SELECT min(capacity - booked) FROM (SELECT capacity, booked "
                    "FROM capacity_poolhour WHERE pool_id = %s AND hour >= %s AND hour < %s "
                    "ORDER BY hour FOR UPDATE) AS window_hours",
                    [pool_id, start, end],
                ).fetchone()
                if free < gpus:
                    raise Refused
                conn.execute(
                    "UPDATE capacity_poolhour SET booked = booked + %s "
                    "WHERE pool_id = %s AND hour >= %s AND hour < %s",
                    [gpus, pool_id, start, end],
                )
                total = round(price * gpus * length, 2)
                reservation_id = uuid.uuid4()
                conn.execute(
                    """INSERT INTO marketplace_reservation
                        (id, tenant_id, pool_id, gpu_count, start, "end", capacity_until,
                         status, currency, list_price_per_gpu_hour, unit_price, total_price,
                         charge, invoiced_amount, cancellation_fee, created_at, updated_at,
                         confirmed_at, cancelled_by, cancellation_reason, scope,
                         commitment_percent, cancellation_terms)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, 'confirmed', 'USD', %s, %s, %s, %s,
                            0, 0, now(), now(), now(), '', '', '{}', 0, '[]')""",
                    [
                        reservation_id,
                        tenant_id,
                        pool_id,
                        gpus,
                        start,
                        end,
                        end,
                        price,
                        price,
                        total,
                        total,
                    ],
                )
                conn.execute(
                    "INSERT INTO marketplace_placement "
                    '(reservation_id, pool_id, start, "end", gpus, created_at) '
                    "VALUES (%s, %s, %s, %s, %s, now())",
                    [reservation_id, pool_id, start, end, gpus],
                )
            result.booked += 1
        except Refused:
            result.insufficient += 1
        except Exception:
            result.errors.append(traceback.format_exc(limit=3))
        result.latencies_ms.append((time.perf_counter() - began) * 1000)
    conn.close()
    results.put(result)


def service_client(
    index: int,
    tenant_id: int,
    pool_slugs: list[str],
    span_hours: int,
    seconds: float,
    barrier,
    results,
) -> None:
    """One client process on the booking service."""
    django_setup()
    from django.db import connection

    from capacity.errors import InsufficientCapacity
    from core.timeutils import HOUR, floor_hour, utcnow
    from marketplace.models import Tenant
    from marketplace.services.booking import BookingRequest, reservation_create

    result = ClientResult()
    tenant = Tenant.objects.get(pk=tenant_id)
    first_hour = floor_hour(utcnow()) + timedelta(days=1)
    draw = windows(index, pool_slugs, span_hours)
    deadline = None
    while deadline is None or time.monotonic() < deadline:
        if deadline is None and result.latencies_ms:  # warmed up
            result = ClientResult()
            barrier.wait()
            deadline = time.monotonic() + seconds
        slug, offset, length = next(draw)
        start = first_hour + offset * HOUR
        request = BookingRequest(
            gpu_model=GPU_MODEL, gpu_count=8, start=start, end=start + length * HOUR, pool=slug
        )
        began = time.perf_counter()
        try:
            reservation_create(tenant=tenant, request=request, fingerprint=request.fingerprint())
            result.booked += 1
        except InsufficientCapacity:
            result.insufficient += 1
        except Exception:
            result.errors.append(traceback.format_exc(limit=3))
        result.latencies_ms.append((time.perf_counter() - began) * 1000)
    connection.close()
    results.put(result)


def run(scenario: Scenario, target, args: argparse.Namespace) -> RunResult:
    from django.db import connection

    tenant_ids, pool_slugs = seed(scenario, args.clients)
    connection.close()  # the clients open their own
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(args.clients + 1)
    results = context.Queue()
    processes = [
        context.Process(
            target=target,
            args=(
                i,
                tenant_ids[i],
                pool_slugs,
                scenario.span_hours,
                args.seconds,
                barrier,
                results,
            ),
        )
        for i in range(args.clients)
    ]
    for process in processes:
        process.start()
    barrier.wait(timeout=120)  # every client is set up and connected
    began = time.perf_counter()
    collected = [results.get(timeout=args.seconds + 120) for _ in processes]
    elapsed = time.perf_counter() - began
    for process in processes:
        process.join()
    return RunResult(
        seconds=elapsed,
        latencies_ms=[ms for result in collected for ms in result.latencies_ms],
        booked=sum(result.booked for result in collected),
        insufficient=sum(result.insufficient for result in collected),
        errors=[error for result in collected for error in result.errors],
        violations=django_ledger_violations(),
    )


def report(label: str, result: RunResult) -> None:
    latencies = result.latencies_ms
    check = "OK" if not any(result.violations.values()) else str(result.violations)
    print(
        f"   {label:<8} bookings/s {result.per_second:8.1f}   "
        f"p50 {percentile(latencies, 50):6.1f} ms   p99 {percentile(latencies, 99):6.1f} ms   "
        f"booked {result.booked}, refused {result.insufficient}, "
        f"errors {len(result.errors)}; guarantee {check}"
    )
    for error in result.errors[:5]:
        print("      error:", error.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="client processes (default 8)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=8 * SCALE,
        help="per run; four runs (default 8 x BENCH_SCALE)",
    )
    parser.add_argument("--pools", type=int, default=16, help="pools when spread (default 16)")
    args = parser.parse_args()

    database_create_if_missing()
    django_setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    scenarios = [
        Scenario(
            "spread",
            pools=args.pools,
            nodes_per_pool=64,
            span_hours=7 * 24,
            description=f"8-GPU bookings of 1-8 h over {args.pools} pools of 512 GPUs, one week",
        ),
        Scenario(
            "hot",
            pools=1,
            nodes_per_pool=4096,
            span_hours=24,
            description="8-GPU bookings of 1-8 h on one pool of 32,768 GPUs, one day",
        ),
    ]
    rows, problems = [], []
    for scenario in scenarios:
        print(f"\n== {scenario.name}: {scenario.description}, {args.clients} clients")
        bare = run(scenario, bare_client, args)
        report("bare", bare)
        service = run(scenario, service_client, args)
        report("service", service)
        share = service.per_second / bare.per_second if bare.per_second else 0.0
        goal = GOALS[scenario.name]
        print(
            f"   service at {share:.1%} of the bare booking transaction "
            f"(goal >= {goal:.0%}): {verdict(share >= goal)}   "
            f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
        )
        where = "over many pools" if scenario.name == "spread" else "on one hot pool"
        rows.append(
            row(
                f"service booking / bare, {where}",
                f"{share:.1%} ({service.per_second:.0f} vs {bare.per_second:.0f}/s)",
                f">= {goal:.0%}",
                share >= goal,
            )
        )
        for label, result in (("bare", bare), ("service", service)):
            if any(result.violations.values()):
                problems.append(f"{scenario.name} {label}: {result.violations}")
            if result.errors:
                problems.append(f"{scenario.name} {label}: {len(result.errors)} errors")
            if not result.booked:
                problems.append(f"{scenario.name} {label}: nothing booked")
    write_results("booking", rows, guarantee_ok=not problems, problems=problems)
    if problems:
        print("\nFAILED: " + "; ".join(problems))
        return 1
    print("\nNo overbooking; the ledger equals the placements, in every run.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
