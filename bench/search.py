"""Search at scale: the availability search and the earliest-window search over 1,000 pools
carrying 1,000,000 reservations.

    .venv/bin/python bench/search.py [--pools 1000] [--reservations 1000000] [--calls 200]
                                     [--seconds 45] [--reuse]

Creates (drops first) the database ``bench_search`` on the PostgreSQL server of
BENCH_DATABASE_SERVER (default postgres://postgres@127.0.0.1:5432), migrates it, and loads with
set-based SQL (INSERT ... SELECT generate_series; not measured): the pools (10 providers, 50
regions, 128-512 GPUs each, a quarter of them backup capacity, prices varying), 100 tenants,
the confirmed reservations, their placements and the capacity ledger rows they hold. The
reservations lie in lanes of 8 or 16 GPUs per pool (10 lanes, 120 GPUs), one after another in
slots of 15 hours (1-12 h each), so no hour is over capacity by construction and every pool
has busy and free stretches; the ledger is the sum of the placements, as booking leaves it.

Then it times, through ``marketplace.selectors``, up to N calls of each (or until S seconds,
whichever comes first), with varied parameters (8-128 GPUs; half of the calls over every pool,
a quarter per provider, a quarter per region):

- ``availability_search``: a 1-48 h window in the loaded span (goal p99 < 50 ms);
- ``earliest_windows``: 1-72 h within 2-30 days (goal p99 < 200 ms).

After one unmeasured call of each, the process freezes what it has loaded out of the garbage
collector's sight (``gc.freeze``), as every web worker does (gunicorn.conf.py): otherwise a
full collection walking all of Django lands in some calls and doubles the p99.

Each call's ceiling is the same question asked in one bare SQL statement on the same tables:
for availability the ledger scan of the window over the candidate pools (missing rows count as
the pool's sellable GPUs), for the earliest window the gaps between the hours that lack the
GPUs (gaps-and-islands with ``lag``). Both leave out what the data has none of (incidents,
contract ends) and the pricing, and are checked to give the same pools and starts as the
selectors (a mismatch is printed: then the ceiling is not the same question).

It ends with the guarantee check of bench/benchlib.py (ledger within capacity and equal to the
placements, every reservation holding what it bought); exit 1 if it fails. Figures go to
var/bench/search.json for bench/summary.py.

BENCH_SCALE multiplies the pools and the reservations (default 1,000 and 1,000,000), and the
time cap. ``--reuse`` keeps a ``bench_search`` database an earlier run loaded with the same
figures (only migrating it), to time the searches again without the load."""

import argparse
import gc
import os
import random
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib import (  # noqa: E402
    SCALE,
    ledger_problems,
    percentile,
    row,
    scaled,
    verdict,
    write_results,
)

DATABASE = "bench_search"
SERVER = os.environ.get("BENCH_DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
os.environ["DATABASE_URL"] = f"{SERVER}/{DATABASE}"
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
os.environ.setdefault("LOG_LEVEL", "WARNING")

GPU_MODEL = "h100-sxm-80gb"
PROVIDERS = 10
REGIONS_PER_PROVIDER = 5
TENANTS = 100
LANES = 10  # per pool: lanes of 8 and 16 GPUs in turn, 120 GPUs in all
SLOT_HOURS = 15
GOAL_AVAILABILITY_P99_MS = 50
GOAL_EARLIEST_P99_MS = 200


def recreate_database() -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')


def loaded_data(pools: int, reservations: int):
    """(tenant, first hour of the loaded span, hours in it) of a database ``load`` filled
    earlier with the same figures, or None when it holds something else."""
    from capacity.models import CapacityPool
    from marketplace.models import Reservation, Tenant

    first = CapacityPool.objects.order_by("available_from").first()
    if (
        first is None
        or CapacityPool.objects.count() != pools
        or Reservation.objects.count() != reservations
    ):
        return None
    per_pool = max(LANES, reservations // pools)
    span_hours = -(-per_pool // LANES) * SLOT_HOURS
    tenant = Tenant.objects.order_by("pk").first()
    return tenant, first.available_from + timedelta(days=2), span_hours


def database_exists() -> bool:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE])
        return found.fetchone() is not None


def timed_step(label: str):
    class Step:
        def __enter__(self):
            print(f"... {label}", end="", flush=True)
            self.began = time.perf_counter()

        def __exit__(self, *exc):
            print(f" {time.perf_counter() - self.began:.1f} s", flush=True)

    return Step()


def load(pools: int, reservations: int):
    """The catalogue with the ORM, the rest with INSERT ... SELECT. Returns (tenant, first
    hour of the loaded span, hours in it)."""
    from django.db import connection

    from capacity.models import CapacityPool, GpuModel, Provider, Region
    from core.timeutils import floor_hour, utcnow
    from marketplace.models import PoolPrice, Tenant

    per_pool = max(LANES, reservations // pools)
    slots = -(-per_pool // LANES)
    span_hours = slots * SLOT_HOURS
    first_hour = floor_hour(utcnow()) + timedelta(hours=2)

    gpu = GpuModel.objects.create(slug=GPU_MODEL, vendor="nvidia", name="H100", memory_gb=80)
    regions = []
    for p in range(PROVIDERS):
        provider = Provider.objects.create(
            name=f"Provider {p}", slug=f"provider-{p}", kind="neocloud"
        )
        for r in range(REGIONS_PER_PROVIDER):
            regions.append(
                Region.objects.create(
                    provider=provider, code=f"p{p}-r{r}", name=f"R{p}.{r}", country="US"
                )
            )
    created = CapacityPool.objects.bulk_create(
        (
            CapacityPool(
                slug=f"pool-{i:05d}",
                region=regions[i % len(regions)],
                gpu_model=gpu,
                gpus_per_node=8,
                node_count=16 * (1 + i % 4),
                available_from=first_hour - timedelta(days=2),
                available_until=first_hour + timedelta(hours=span_hours) + timedelta(days=400),
                cost_per_gpu_hour=Decimal("1.5000"),
                tier=CapacityPool.Tier.BACKUP if i % 4 == 3 else CapacityPool.Tier.PRIMARY,
            )
            for i in range(pools)
        ),
        batch_size=1000,
    )
    PoolPrice.objects.bulk_create(
        (
            PoolPrice(
                pool=pool,
                currency="USD",
                price_per_gpu_hour=Decimal("2.0000") + Decimal(i % 37) / 100,
            )
            for i, pool in enumerate(created)
        ),
        batch_size=1000,
    )
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET work_mem = '256MB'")
        cursor.execute(
            """
            INSERT INTO marketplace_tenant
                (name, slug, status, currency, credit_limit, max_gpus, max_reservation_hours,
                 discount_percent, tax_rate_percent, ending_soon_lead, low_balance_alerted,
                 payment_terms_days, created_at, updated_at)
            SELECT 'Bench tenant ' || i, 'bench-' || i, 'active', 'USD', 1000000000, 1000000,
                   2160, 0, 0, interval '1 hour', false, 30, now(), now()
            FROM generate_series(1, %s) AS i
            """,
            [TENANTS],
        )
        # Reservation i: pool i % pools; on it, the (i / pools)-th, in lane j % LANES and slot
        # j / LANES; 1-12 h at a pseudo-random offset inside its 15 h slot.
        with timed_step(f"{reservations:,} reservations"):
            cursor.execute(
                """
                WITH pools AS (
                    SELECT p.id, pp.price_per_gpu_hour AS price,
                           row_number() OVER (ORDER BY p.id) - 1 AS n
                    FROM capacity_capacitypool p
                    JOIN marketplace_poolprice pp ON pp.pool_id = p.id
                ), tenants AS (
                    SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM marketplace_tenant
                ), drawn AS (
                    SELECT i, i %% %(pools)s AS pool_n, (i / %(pools)s) %% %(lanes)s AS lane,
                           i / %(pools)s / %(lanes)s AS slot,
                           1 + (i * 2654435761) %% 4294967296 %% 12 AS hours,
                           (i * 40503) %% 65521 AS jitter
                    FROM generate_series(0::bigint, %(reservations)s - 1) AS i
                ), placed AS (
                    SELECT d.i, p.id AS pool_id, p.price, t.id AS tenant_id,
                           8 * (1 + d.lane %% 2) AS gpus, d.hours,
                           %(first)s::timestamptz + (d.slot * %(slot)s
                               + d.jitter %% (%(slot)s - d.hours + 1)) * interval '1 hour'
                               AS start
                    FROM drawn d
                    JOIN pools p ON p.n = d.pool_n
                    JOIN tenants t ON t.n = d.i %% %(tenants)s
                )
                INSERT INTO marketplace_reservation
                    (id, tenant_id, pool_id, gpu_count, start, "end", capacity_until, status,
                     currency, list_price_per_gpu_hour, unit_price, total_price, charge,
                     invoiced_amount, cancellation_fee, created_at, updated_at, confirmed_at,
                     cancelled_by, cancellation_reason, scope, commitment_percent,
                     cancellation_terms)
                SELECT lpad(to_hex(i), 32, '0')::uuid, tenant_id, pool_id, gpus, start,
                       start + hours * interval '1 hour', start + hours * interval '1 hour',
                       'confirmed', 'USD', price, price, round(price * gpus * hours, 2),
                       round(price * gpus * hours, 2), 0, 0, now(), now(), now(), '', '',
                       '{}', 0, '[]'
                FROM placed
                """,
                {
                    "pools": pools,
                    "lanes": LANES,
                    "reservations": reservations,
                    "tenants": TENANTS,
                    "first": first_hour,
                    "slot": SLOT_HOURS,
                },
            )
        with timed_step("their placements"):
            cursor.execute(
                """
                INSERT INTO marketplace_placement
                    (reservation_id, pool_id, start, "end", gpus, incident_id, created_at)
                SELECT id, pool_id, start, capacity_until, gpu_count, NULL, now()
                FROM marketplace_reservation
                """
            )
        with timed_step("the ledger rows they hold"):
            cursor.execute(
                """
                INSERT INTO capacity_poolhour (pool_id, hour, capacity, booked, excess)
                SELECT pl.pool_id, h.hour, p.gpus_per_node * p.node_count - p.reserved_gpus,
                       sum(pl.gpus), 0
                FROM marketplace_placement pl
                JOIN capacity_capacitypool p ON p.id = pl.pool_id
                CROSS JOIN LATERAL generate_series(
                    pl.start, pl."end" - interval '1 hour', interval '1 hour') AS h(hour)
                GROUP BY pl.pool_id, h.hour, p.gpus_per_node, p.node_count, p.reserved_gpus
                """
            )
        with timed_step("VACUUM ANALYZE"):
            cursor.execute("VACUUM ANALYZE")
    tenant = Tenant.objects.order_by("pk").first()
    return tenant, first_hour, span_hours


CANDIDATES = """
    SELECT p.id, pp.price_per_gpu_hour AS price,
           p.gpus_per_node * p.node_count - p.reserved_gpus AS sellable
    FROM capacity_capacitypool p
    JOIN capacity_gpumodel g ON g.id = p.gpu_model_id
    JOIN marketplace_poolprice pp ON pp.pool_id = p.id AND pp.currency = %(currency)s
    JOIN capacity_region r ON r.id = p.region_id
    JOIN capacity_provider v ON v.id = r.provider_id
    WHERE g.slug = %(model)s AND p.status = 'active'
      AND (%(region)s::text IS NULL OR r.code = %(region)s)
      AND (%(provider)s::text IS NULL OR v.slug = %(provider)s)
"""

# Counts hours, not row ids: the covering index poolhour_free_idx holds (pool, hour, capacity,
# booked), so the scan stays index-only, as the selector's does.
BARE_AVAILABILITY = f"""
    WITH pools AS ({CANDIDATES})
    SELECT pools.id
    FROM pools
    LEFT JOIN capacity_poolhour h
        ON h.pool_id = pools.id AND h.hour >= %(start)s AND h.hour < %(end)s
    GROUP BY pools.id, pools.price, pools.sellable
    HAVING LEAST(
        COALESCE(min(h.capacity - h.booked), pools.sellable),
        CASE WHEN count(h.hour) < %(hours)s THEN pools.sellable ELSE 2147483647 END
    ) >= %(gpus)s
    ORDER BY pools.price, pools.id
"""

BARE_EARLIEST = f"""
    WITH pools AS ({CANDIDATES}),
    fit AS (SELECT id, price FROM pools WHERE sellable >= %(gpus)s),
    blocked AS (
        SELECT h.pool_id, h.hour
        FROM capacity_poolhour h JOIN fit ON fit.id = h.pool_id
        WHERE h.hour >= %(not_before)s AND h.hour < %(not_after)s
          AND h.capacity - h.booked < %(gpus)s
        UNION ALL
        SELECT id, %(not_after)s FROM fit
    ),
    gaps AS (
        SELECT pool_id, hour,
               COALESCE(lag(hour) OVER (PARTITION BY pool_id ORDER BY hour)
                        + interval '1 hour', %(not_before)s) AS gap_start
        FROM blocked
    )
    SELECT gaps.pool_id, min(gaps.gap_start) AS start
    FROM gaps JOIN fit ON fit.id = gaps.pool_id
    WHERE gaps.hour - gaps.gap_start >= %(duration)s * interval '1 hour'
    GROUP BY gaps.pool_id, fit.price
    ORDER BY start, fit.price, gaps.pool_id
    LIMIT %(limit)s
"""


def draw_filter(rng: random.Random) -> dict[str, str | None]:
    roll = rng.random()
    if roll < 0.5:
        return {"region": None, "provider": None}
    if roll < 0.75:
        return {"region": None, "provider": f"provider-{rng.randrange(PROVIDERS)}"}
    region = f"p{rng.randrange(PROVIDERS)}-r{rng.randrange(REGIONS_PER_PROVIDER)}"
    return {"region": region, "provider": None}


def bare(cursor, sql: str, params: dict) -> tuple[list, float]:
    began = time.perf_counter()
    cursor.execute(sql, params)
    rows = cursor.fetchall()
    return rows, (time.perf_counter() - began) * 1000


def time_searches(tenant, first_hour, span_hours: int, calls: int, seconds: float):
    from django.db import connection

    from core.timeutils import HOUR
    from marketplace.selectors import PoolFilter, availability_search, earliest_windows

    rng = random.Random(1)
    base = {"currency": tenant.currency, "model": GPU_MODEL}
    results = {
        "availability": {"service": [], "bare": [], "mismatches": 0},
        "earliest": {"service": [], "bare": [], "mismatches": 0},
    }
    with connection.cursor() as cursor:
        for kind in results:
            figures = results[kind]
            # One unmeasured call of each: imports, connection, plans.
            warm = True
            deadline = time.monotonic() + seconds
            while len(figures["service"]) < calls and time.monotonic() < deadline:
                where = draw_filter(rng)
                gpus = rng.choice([8, 8, 16, 32, 64, 128])
                criteria = PoolFilter(gpu_model=GPU_MODEL, **where)
                if kind == "availability":
                    start = first_hour + rng.randrange(max(1, span_hours - 48)) * HOUR
                    end = start + rng.randint(1, 48) * HOUR
                    began = time.perf_counter()
                    offers = availability_search(
                        tenant=tenant, criteria=criteria, gpu_count=gpus, start=start, end=end
                    )
                    service_ms = (time.perf_counter() - began) * 1000
                    rows, bare_ms = bare(
                        cursor,
                        BARE_AVAILABILITY,
                        {
                            **base,
                            **where,
                            "start": start,
                            "end": end,
                            "hours": (end - start) // HOUR,
                            "gpus": gpus,
                        },
                    )
                    same = sorted(offer.pool.pk for offer in offers) == sorted(r[0] for r in rows)
                else:
                    duration = rng.randint(1, 72)
                    not_before = first_hour + rng.randrange(max(1, span_hours // 2)) * HOUR
                    not_after = not_before + timedelta(days=rng.randint(2, 30))
                    began = time.perf_counter()
                    windows = earliest_windows(
                        tenant=tenant,
                        criteria=criteria,
                        gpu_count=gpus,
                        duration_hours=duration,
                        not_before=not_before,
                        not_after=not_after,
                    )
                    service_ms = (time.perf_counter() - began) * 1000
                    rows, bare_ms = bare(
                        cursor,
                        BARE_EARLIEST,
                        {
                            **base,
                            **where,
                            "not_before": not_before,
                            "not_after": not_after,
                            "duration": duration,
                            "gpus": gpus,
                            "limit": 5,
                        },
                    )
                    same = [w.start for w in windows] == [r[1] for r in rows]
                if warm:
                    warm = False
                    # As each web worker does once it has loaded the application
                    # (gunicorn.conf.py): what is loaded stays out of full collections.
                    gc.freeze()
                    continue
                figures["service"].append(service_ms)
                figures["bare"].append(bare_ms)
                figures["mismatches"] += not same
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", type=int, default=scaled(1000))
    parser.add_argument("--reservations", type=int, default=scaled(1_000_000))
    parser.add_argument("--calls", type=int, default=200, help="per search (default 200)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=45 * SCALE,
        help="at most this long per search (default 45 x BENCH_SCALE)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the data an earlier run loaded with the same figures (only migrate)",
    )
    args = parser.parse_args()

    import django

    loaded = None
    if args.reuse and database_exists():
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        loaded = loaded_data(args.pools, args.reservations)
        if loaded is not None:
            print(f"Database {DATABASE}: reusing the data loaded earlier.", flush=True)
            tenant, first_hour, span_hours = loaded
    if loaded is None:
        print(f"Database {DATABASE}: recreating, migrating, loading...", flush=True)
        if args.reuse:
            from django.db import connections

            connections.close_all()
        recreate_database()
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        began = time.perf_counter()
        tenant, first_hour, span_hours = load(args.pools, args.reservations)
        print(f"Loaded in {time.perf_counter() - began:.0f} s (not measured).", flush=True)

    results = time_searches(tenant, first_hour, span_hours, args.calls, args.seconds)
    goals = {"availability": GOAL_AVAILABILITY_P99_MS, "earliest": GOAL_EARLIEST_P99_MS}
    names = {
        "availability": "availability search",
        "earliest": "earliest-window search",
    }
    rows = []
    print(f"\n{args.pools:,} pools, {args.reservations:,} reservations:")
    for kind, figures in results.items():
        service, bare_ms = figures["service"], figures["bare"]
        p50, p99 = percentile(service, 50), percentile(service, 99)
        b50, b99 = percentile(bare_ms, 50), percentile(bare_ms, 99)
        goal = goals[kind]
        print(
            f"   {names[kind]:<24} {len(service):4d} calls   p50 {p50:8.1f} ms   "
            f"p99 {p99:8.1f} ms   goal p99 < {goal} ms: {verdict(p99 < goal)}"
        )
        print(
            f"   {'  bare SQL (ceiling)':<24} {len(bare_ms):4d} calls   p50 {b50:8.1f} ms   "
            f"p99 {b99:8.1f} ms   (the selector takes {p50 / b50:.0f}x the bare p50)"
            + (
                f"; {figures['mismatches']} answers differ from the selector's"
                if figures["mismatches"]
                else "; same answers"
            )
        )
        rows.append(
            row(
                f"{names[kind]} p99, {args.pools:,} pools / {args.reservations:,} reservations",
                f"{p99:.0f} ms (bare SQL {b99:.0f} ms; {len(service)} calls)",
                f"< {goal} ms",
                p99 < goal,
            )
        )

    print("Checking the ledger...", flush=True)
    problems = ledger_problems()
    print("   guarantee check: " + ("OK" if not problems else "; ".join(problems)))
    write_results("search", rows, guarantee_ok=not problems, problems=problems)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
