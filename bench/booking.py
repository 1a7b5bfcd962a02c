"""Booking throughput against PostgreSQL, through the real booking service.

    .venv/bin/python bench/booking.py [--clients 8] [--seconds 12] [--pools 16] [--bookings K]

C client processes (each with its own Django setup and database connection, so the GIL is not
what is measured) call ``marketplace.services.booking.reservation_create`` as fast as they can,
for T seconds or until K bookings were attempted, in two scenarios:

- spread: random windows on N pools (little lock contention between clients);
- hot: random windows on one pool over one day (every client fights for the same ledger rows,
  and the busiest hours fill up, so refusals are part of the mix).

It prints bookings per second, p50/p99 latency and the insufficient_capacity count, then checks
the guarantee on the data it produced: every ledger hour within capacity, every hour's booked
GPUs equal to what the reservations' placements imply. It exits non-zero if the check fails or
any request ended in anything but a booking or insufficient_capacity (a deadlock, say).

It uses its own database (gpu_marketplace_bench, or BENCH_DATABASE_URL), created and migrated
on first use and emptied of pools, tenants and reservations before each scenario."""

import argparse
import multiprocessing
import os
import random
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH_DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gpu_marketplace_bench"
)
# A bare booking transaction (lock the hours, check, update, insert) in psql/pgbench on the
# 2-core reference machine: the ceiling the service path is compared against.
REFERENCE_PER_SECOND = {"spread": 2100, "hot": 730}
GPU_MODEL = "h100-sxm-80gb"


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
    return [tenant.pk for tenant in tenants], [pool.slug for pool in pools]


def client(
    index: int,
    tenant_id: int,
    pool_slugs: list[str],
    span_hours: int,
    seconds: float,
    bookings: int | None,
    barrier,
    results,
) -> None:
    """One client process: book random 8-GPU windows until the time or the count is up."""
    django_setup()
    from django.db import connection

    from capacity.errors import InsufficientCapacity
    from core.timeutils import HOUR, floor_hour, utcnow
    from marketplace.models import Tenant
    from marketplace.services.booking import BookingRequest, reservation_create

    result = ClientResult()
    rng = random.Random(index)
    tenant = Tenant.objects.get(pk=tenant_id)
    first_hour = floor_hour(utcnow()) + timedelta(days=1)
    connection.ensure_connection()
    barrier.wait()
    deadline = time.monotonic() + seconds
    attempts = 0
    while time.monotonic() < deadline and (bookings is None or attempts < bookings):
        attempts += 1
        start = first_hour + rng.randrange(span_hours) * HOUR
        request = BookingRequest(
            gpu_model=GPU_MODEL,
            gpu_count=8,
            start=start,
            end=start + rng.randint(1, 8) * HOUR,
            pool=rng.choice(pool_slugs),
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


def percentile(values: list[float], percent: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def guarantee_violations() -> dict[str, int]:
    """Count ledger rows that break the guarantee, straight from the database."""
    from django.db import connection

    queries = {
        "hours booked beyond capacity or below zero": """
            SELECT count(*) FROM capacity_poolhour WHERE booked > capacity OR booked < 0""",
        "hours whose booked differs from the placements": """
            SELECT count(*) FROM capacity_poolhour h
            WHERE h.booked <> COALESCE((
                SELECT sum(p.gpus) FROM marketplace_placement p
                WHERE p.pool_id = h.pool_id AND p.start <= h.hour AND h.hour < p."end"
            ), 0)""",
        "placements holding hours without a ledger row": """
            SELECT count(*) FROM marketplace_placement p
            WHERE (SELECT count(*) FROM capacity_poolhour h
                   WHERE h.pool_id = p.pool_id AND h.hour >= p.start AND h.hour < p."end")
                <> EXTRACT(EPOCH FROM p."end" - p.start) / 3600""",
    }
    with connection.cursor() as cursor:
        counts = {}
        for label, sql in queries.items():
            cursor.execute(sql)
            counts[label] = cursor.fetchone()[0]
    return counts


def run(scenario: Scenario, args: argparse.Namespace) -> bool:
    from django.db import connection

    from capacity.models import PoolHour
    from marketplace.models import Reservation

    tenant_ids, pool_slugs = seed(scenario, args.clients)
    connection.close()  # the clients open their own
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(args.clients + 1)
    results = context.Queue()
    per_client = None if args.bookings is None else -(-args.bookings // args.clients)
    processes = [
        context.Process(
            target=client,
            args=(
                i,
                tenant_ids[i],
                pool_slugs,
                scenario.span_hours,
                args.seconds,
                per_client,
                barrier,
                results,
            ),
        )
        for i in range(args.clients)
    ]
    for process in processes:
        process.start()
    barrier.wait(timeout=120)  # every client has set Django up and connected
    began = time.perf_counter()
    collected = [results.get(timeout=args.seconds + 120) for _ in processes]
    elapsed = time.perf_counter() - began
    for process in processes:
        process.join()

    latencies = [ms for result in collected for ms in result.latencies_ms]
    booked = sum(result.booked for result in collected)
    insufficient = sum(result.insufficient for result in collected)
    errors = [error for result in collected for error in result.errors]
    violations = guarantee_violations()
    per_second = booked / elapsed
    reference = REFERENCE_PER_SECOND[scenario.name]

    print(f"\n== {scenario.name}: {scenario.description}")
    print(
        f"   clients {args.clients}, {elapsed:.1f} s, {len(latencies)} requests "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    print(
        f"   bookings/s {per_second:8.1f}   (requests/s {len(latencies) / elapsed:.1f}; "
        f"bare PostgreSQL booking transaction on the reference machine ~{reference}/s, "
        f"so the service path reaches {per_second / reference:.0%} of it)"
    )
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"   latency p50 {p50:6.1f} ms   p99 {p99:6.1f} ms")
    print(f"   booked {booked}   insufficient_capacity {insufficient}   other errors {len(errors)}")
    print(
        f"   ledger rows {PoolHour.objects.count()}, reservations "
        f"{Reservation.objects.count()}; guarantee check: "
        + ("OK" if not any(violations.values()) else str(violations))
    )
    for error in errors[:5]:
        print("   error:", error.strip().splitlines()[-1])
    return not errors and not any(violations.values()) and booked > 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="client processes (default 8)")
    parser.add_argument("--seconds", type=float, default=12, help="per scenario (default 12)")
    parser.add_argument("--pools", type=int, default=16, help="pools when spread (default 16)")
    parser.add_argument(
        "--bookings", type=int, default=None, help="stop after this many attempts per scenario"
    )
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
            nodes_per_pool=256,
            span_hours=24,
            description="8-GPU bookings of 1-8 h on one pool of 2048 GPUs, one day "
            "(its busiest hours fill up)",
        ),
    ]
    ok = [run(scenario, args) for scenario in scenarios]
    if not all(ok):
        print("\nFAILED: errors or a broken guarantee (see above).")
        return 1
    print("\nNo overbooking; the ledger equals the reservations in both scenarios.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
