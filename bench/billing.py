"""Billing at scale: meter and invoice a month for 10,000 tenants and 1,000,000 usage rows.

Usage: .venv/bin/python bench/billing.py [--tenants 10000] [--hours 100]

Creates (drops first) the database ``gpu_marketplace_bench_billing`` on the PostgreSQL server
of BENCH_DATABASE_SERVER (default postgres://postgres@127.0.0.1:5432), migrates it, and
generates tenants and completed March reservations with INSERT ... SELECT (not measured).
Then it measures, through the real services:

1. metering the whole month in one back-fill run (one usage row per reservation-hour),
2. a steady-state hourly metering run afterwards,
3. the draft run (one transaction per tenant), 4. the finalize run (one per invoice),

and, for comparison, the bare SQL aggregate ``SUM(amount) GROUP BY tenant`` over the usage
table. It ends by checking the books: one invoice per tenant, gapless numbers, line totals
equal to the rounded per-reservation sums, the ledger equal to minus the invoice totals."""

import argparse
import os
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATABASE = "gpu_marketplace_bench_billing"
SERVER = os.environ.get("BENCH_DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432")
os.environ["DATABASE_URL"] = f"{SERVER}/{DATABASE}"
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
os.environ["DEBUG"] = "false"  # DEBUG would keep every one of ~200,000 queries in memory
os.environ.setdefault("LOG_LEVEL", "WARNING")

MARCH = datetime(2026, 3, 1, tzinfo=UTC)
APRIL = datetime(2026, 4, 1, tzinfo=UTC)
AFTER_GRACE = datetime(2026, 4, 3, 1, tzinfo=UTC)
POOLS = 20

timings: list[tuple[str, float, str]] = []


@contextmanager
def timed(label: str, note: str = ""):
    print(f"... {label}", flush=True)
    started = time.perf_counter()
    yield
    elapsed = time.perf_counter() - started
    timings.append((label, elapsed, note))
    print(f"    {elapsed:8.2f} s", flush=True)


def recreate_database() -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')


def generate(tenants: int, hours: int) -> None:
    """Pools with the ORM; tenants and reservations with INSERT ... SELECT generate_series."""
    from decimal import Decimal

    from django.db import connection

    from capacity.models import CapacityPool, GpuModel, MaintenanceWindow, Provider, Region

    h100 = GpuModel.objects.create(slug="h100", vendor="nvidia", name="H100", memory_gb=80)
    for i in range(POOLS):
        provider, _ = Provider.objects.get_or_create(
            slug=f"provider-{i % 5}", defaults={"name": f"Provider {i % 5}", "kind": "neocloud"}
        )
        region, _ = Region.objects.get_or_create(
            provider=provider, code=f"r-{i % 2}", defaults={"name": f"R{i % 2}", "country": "US"}
        )
        CapacityPool.objects.create(
            slug=f"pool-{i:02d}",
            region=region,
            gpu_model=h100,
            gpus_per_node=8,
            node_count=2000,
            available_from=datetime(2026, 1, 1, tzinfo=UTC),
            available_until=datetime(2027, 1, 1, tzinfo=UTC),
            cost_per_gpu_hour=Decimal("1.7000") + Decimal(i) / 100,
            price_per_gpu_hour=Decimal("2.4500") + Decimal(i) / 100,
            tier="backup" if i % 4 == 3 else "primary",
        )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO marketplace_tenant
                (name, slug, status, currency, credit_limit, max_gpus, max_reservation_hours,
                 discount_percent, tax_rate_percent, ending_soon_lead, low_balance_alerted,
                 created_at, updated_at)
            SELECT 'Bench tenant ' || i, 'bench-' || i, 'active', 'USD', 1000000, 1024, 2160,
                   0, (i %% 3) * 5, interval '1 hour', false, now(), now()
            FROM generate_series(1, %s) AS i
            """,
            [tenants],
        )
        # One completed reservation per tenant: 8 GPUs for `hours` hours somewhere in March,
        # at the pool's list price less 0-15 % (commitment and negotiated discounts).
        cursor.execute(
            """
            WITH pools AS (
                SELECT id, price_per_gpu_hour, row_number() OVER (ORDER BY id) - 1 AS n
                FROM capacity_capacitypool
            ), picked AS (
                SELECT t.id AS tenant_id, p.id AS pool_id, p.price_per_gpu_hour AS list_price,
                       round(p.price_per_gpu_hour * (1 - (t.id %% 4) * 0.05), 4) AS unit_price,
                       timestamptz '2026-03-01 00:00+00'
                           + ((t.id * 37) %% (744 - %(hours)s)) * interval '1 hour' AS start
                FROM marketplace_tenant t JOIN pools p ON p.n = t.id %% %(pools)s
            )
            INSERT INTO marketplace_reservation
                (id, tenant_id, pool_id, gpu_count, start, "end", capacity_until, status,
                 currency, list_price_per_gpu_hour, unit_price, total_price, charge,
                 invoiced_amount, cancellation_fee, created_at, updated_at, confirmed_at,
                 cancelled_by, cancellation_reason)
            SELECT gen_random_uuid(), tenant_id, pool_id, 8, start,
                   start + %(hours)s * interval '1 hour', start + %(hours)s * interval '1 hour',
                   'completed', 'USD', list_price, unit_price,
                   round(unit_price * 8 * %(hours)s, 2), round(unit_price * 8 * %(hours)s, 2),
                   0, 0, now(), now(), now(), '', ''
            FROM picked
            """,
            {"hours": hours, "pools": POOLS},
        )
        cursor.execute("ANALYZE")
    # One real outage (4 hours on one pool) so metering's outage check has work to do.
    MaintenanceWindow.objects.create(
        pool=CapacityPool.objects.get(slug="pool-07"),
        kind="outage",
        start=datetime(2026, 3, 15, 10, tzinfo=UTC),
        end=datetime(2026, 3, 15, 14, tzinfo=UTC),
        gpus=8,
        reason="bench outage",
    )


def scalar(sql: str, params=None):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def check_books(tenants: int) -> list[str]:
    from billing.models import Invoice

    problems = []
    invoices = Invoice.objects.filter(period_start=MARCH)
    if invoices.count() != tenants or invoices.exclude(status__in=["finalized", "paid"]).exists():
        problems.append("not one issued invoice per tenant")
    numbers = sorted(int(n.rsplit("-", 1)[1]) for n in invoices.values_list("number", flat=True))
    if numbers != list(range(1, tenants + 1)):
        problems.append("invoice numbers have gaps or duplicates")
    rounded_sums = scalar(
        """SELECT SUM(round(s, 2)) FROM (SELECT SUM(amount) AS s FROM billing_usagerecord
           GROUP BY reservation_id) AS per_reservation"""
    )
    lines = scalar("SELECT SUM(amount) FROM billing_invoiceline")
    if rounded_sums != lines:
        problems.append(f"lines {lines} != rounded usage {rounded_sums}")
    totals = scalar("SELECT SUM(total) FROM billing_invoice")
    ledger = scalar("SELECT SUM(amount) FROM marketplace_ledgerentry WHERE kind = 'invoice'")
    if ledger != -totals:
        problems.append(f"ledger {ledger} != -totals {totals}")
    unbilled = scalar("SELECT count(*) FROM billing_usagerecord WHERE invoice_id IS NULL")
    if unbilled:
        problems.append(f"{unbilled} usage rows not on an invoice")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--hours", type=int, default=100, help="Hours per reservation.")
    args = parser.parse_args()

    print(f"Database {DATABASE}: recreating and migrating...", flush=True)
    recreate_database()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    generate(args.tenants, args.hours)
    print(
        f"Generated {args.tenants} tenants and reservations ({args.hours} h x 8 GPUs each) in "
        f"{time.perf_counter() - started:.1f} s (not measured).",
        flush=True,
    )

    from billing.models import UsageRecord
    from billing.services.invoicing import invoices_draft, invoices_finalize_due
    from billing.services.metering import meter_usage

    with timed("meter a month (one back-fill run)"):
        metered = meter_usage(until=APRIL)
    rows = UsageRecord.objects.count()
    assert metered.usage_created == rows, (metered, rows)
    with timed("meter one more hour (steady-state hourly run)"):
        hourly = meter_usage(until=datetime(2026, 4, 1, 1, tzinfo=UTC))
    assert hourly.usage_created == 0
    scalar("SELECT count(*) FROM (SELECT 1) AS warm")  # keep the connection warm
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE billing_usagerecord")
    with timed("bare SQL: SUM(amount) GROUP BY tenant over the usage table"):
        groups = scalar(
            "SELECT count(*) FROM (SELECT tenant_id, SUM(amount) FROM billing_usagerecord "
            "GROUP BY tenant_id) AS per_tenant"
        )
    with timed("draft run: build the month's drafts", f"{args.tenants} tenants"):
        drafted = invoices_draft(now=datetime(2026, 4, 1, 1, tzinfo=UTC))
    with timed("finalize run: issue the month's invoices", f"{args.tenants} invoices"):
        finalized = invoices_finalize_due(now=AFTER_GRACE)

    problems = check_books(args.tenants)
    print()
    print(f"Usage rows: {rows:,} ({args.tenants:,} tenants, {groups:,} aggregated groups)")
    print(f"Drafts built: {drafted.done:,}, finalized: {finalized.done:,}, ", end="")
    print(f"failures: {len(drafted.failed) + len(finalized.failed)}")
    print()
    print(f"{'step':<62}{'seconds':>10}")
    for label, elapsed, _ in timings:
        print(f"{label:<62}{elapsed:>10.2f}")
    meter, draft, final = timings[0][1], timings[3][1], timings[4][1]
    bare = timings[2][1]
    per_tenant_ms = (draft + final) * 1000 / args.tenants
    print(f"{'meter + draft + finalize the month':<62}{meter + draft + final:>10.2f}")
    print(f"{'... per tenant (draft + finalize), ms':<62}{per_tenant_ms:>10.2f}")
    print(
        f"{'... that is, times the bare SQL aggregate':<62}{(meter + draft + final) / bare:>10.0f}"
    )
    print()
    print("Books check:", "OK" if not problems else "; ".join(problems))
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
