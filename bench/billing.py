"""Billing at scale: meter and invoice a month for 10,000 tenants and 1,000,000 usage rows.

Usage: .venv/bin/python bench/billing.py [--tenants 10000] [--hours 100]

Creates (drops first) the database ``gpu_marketplace_bench_billing`` on the PostgreSQL server
of BENCH_DATABASE_SERVER (default postgres://postgres@127.0.0.1:5432), migrates it, and
generates tenants, completed March reservations and their placements with INSERT ... SELECT
(not measured). Then it measures, through the real services:

1. metering the whole month in one back-fill run (one usage row per placement-hour),
2. a steady-state hourly metering run afterwards,
3. the draft run (batches of tenants),
4. the usage corrections of an outage recorded after metering (4 hours of one pool, written
   as the marketplace leaves it: cut placements and displacements), then a correction run
   with nothing to do,
5. the finalize run (batches of invoices), 6. the SLA credits of the month's close,

and, for comparison, the bare SQL aggregate ``SUM(amount) GROUP BY tenant`` over the usage
table. It ends by checking the books: one invoice per tenant, gapless numbers, line totals
equal to the rounded per-reservation sums, the ledger equal to minus the invoice totals, one
SLA credit note per displaced tenant."""

import argparse
import os
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
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
OUTAGE_START = datetime(2026, 3, 15, 10, tzinfo=UTC)
OUTAGE_END = datetime(2026, 3, 15, 14, tzinfo=UTC)
POOLS = 20

timings: list[tuple[str, float, str]] = []
METER = "meter a month (one back-fill run)"
BARE = "bare SQL: SUM(amount) GROUP BY tenant over the usage table"
DRAFT = "draft run: build the month's drafts"
FINALIZE = "finalize run: issue the month's invoices"


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

    from capacity.models import CapacityPool, GpuModel, PoolCostRate, Provider, Region
    from marketplace.models import PoolPrice

    h100 = GpuModel.objects.create(slug="h100", vendor="nvidia", name="H100", memory_gb=80)
    for i in range(POOLS):
        provider, _ = Provider.objects.get_or_create(
            slug=f"provider-{i % 5}", defaults={"name": f"Provider {i % 5}", "kind": "neocloud"}
        )
        region, _ = Region.objects.get_or_create(
            provider=provider, code=f"r-{i % 2}", defaults={"name": f"R{i % 2}", "country": "US"}
        )
        pool = CapacityPool.objects.create(
            slug=f"pool-{i:02d}",
            region=region,
            gpu_model=h100,
            gpus_per_node=8,
            node_count=2000,
            available_from=datetime(2026, 1, 1, tzinfo=UTC),
            available_until=datetime(2027, 1, 1, tzinfo=UTC),
            cost_per_gpu_hour=Decimal("1.7000") + Decimal(i) / 100,
            tier="backup" if i % 4 == 3 else "primary",
        )
        # Its cost history starts with its contract (as capacity.services.pool_create does):
        # metering costs each hour at the rate in force then.
        PoolCostRate.objects.create(
            pool=pool, effective_from=pool.available_from, cost_per_gpu_hour=pool.cost_per_gpu_hour
        )
        PoolPrice.objects.create(
            pool=pool, currency="USD", price_per_gpu_hour=Decimal("2.4500") + Decimal(i) / 100
        )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO marketplace_tenant
                (name, slug, status, currency, credit_limit, max_gpus, max_reservation_hours,
                 discount_percent, tax_rate_percent, ending_soon_lead, low_balance_alerted,
                 payment_terms_days, created_at, updated_at)
            SELECT 'Bench tenant ' || i, 'bench-' || i, 'active', 'USD', 1000000, 1024, 2160,
                   0, (i %% 3) * 5, interval '1 hour', false, 30, now(), now()
            FROM generate_series(1, %s) AS i
            """,
            [tenants],
        )
        # One completed reservation per tenant: 8 GPUs for `hours` hours somewhere in March,
        # at the pool's list price less 0-15 % (commitment and negotiated discounts).
        cursor.execute(
            """
            WITH pools AS (
                SELECT p.id, pp.price_per_gpu_hour, row_number() OVER (ORDER BY p.id) - 1 AS n
                FROM capacity_capacitypool p
                JOIN marketplace_poolprice pp ON pp.pool_id = p.id AND pp.currency = 'USD'
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
                 cancelled_by, cancellation_reason, scope, commitment_percent,
                 cancellation_terms)
            SELECT gen_random_uuid(), tenant_id, pool_id, 8, start,
                   start + %(hours)s * interval '1 hour', start + %(hours)s * interval '1 hour',
                   'completed', 'USD', list_price, unit_price,
                   round(unit_price * 8 * %(hours)s, 2), round(unit_price * 8 * %(hours)s, 2),
                   0, 0, now(), now(), now(), '', '', '{}', 0, '[]'
            FROM picked
            """,
            {"hours": hours, "pools": POOLS},
        )
        # Where their GPUs are: one placement per reservation on its own pool, as booking
        # leaves it.
        cursor.execute(
            """
            INSERT INTO marketplace_placement
                (reservation_id, pool_id, start, "end", gpus, incident_id, created_at)
            SELECT id, pool_id, start, capacity_until, gpu_count, NULL, now()
            FROM marketplace_reservation
            WHERE capacity_until > start
            """
        )
        cursor.execute("ANALYZE")


def record_late_outage() -> int:
    """An outage of every booked GPU of pool-07 on 15 March 10:00-14:00, recorded after the
    month was metered, written as the marketplace leaves it: each hit placement cut around
    those hours and a displacement per reservation (all GPUs lost). Returns the number of
    displaced reservations."""
    from django.db import connection

    from capacity.models import CapacityPool, Incident

    pool = CapacityPool.objects.get(slug="pool-07")
    span = {"start": OUTAGE_START, "end": OUTAGE_END, "pool": pool.pk}
    hit = scalar(
        """SELECT count(*) FROM marketplace_placement
           WHERE pool_id = %(pool)s AND start < %(end)s AND "end" > %(start)s""",
        span,
    )
    incident = Incident.objects.create(
        pool=pool,
        kind=Incident.Kind.OUTAGE,
        start=OUTAGE_START,
        end=OUTAGE_END,
        gpus=max(8, 8 * hit),
        reason="bench outage",
    )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH hit AS (
                DELETE FROM marketplace_placement
                WHERE pool_id = %(pool)s AND start < %(end)s AND "end" > %(start)s
                RETURNING reservation_id, pool_id, start, "end", gpus, incident_id
            ), before AS (
                INSERT INTO marketplace_placement
                    (reservation_id, pool_id, start, "end", gpus, incident_id, created_at)
                SELECT reservation_id, pool_id, start, %(start)s, gpus, incident_id, now()
                FROM hit WHERE start < %(start)s
            ), after AS (
                INSERT INTO marketplace_placement
                    (reservation_id, pool_id, start, "end", gpus, incident_id, created_at)
                SELECT reservation_id, pool_id, %(end)s, "end", gpus, incident_id, now()
                FROM hit WHERE "end" > %(end)s
            )
            INSERT INTO marketplace_displacement
                (incident_id, reservation_id, start, "end", gpus_taken, gpus_moved, gpus_lost,
                 created_at)
            SELECT %(incident)s, reservation_id, GREATEST(start, %(start)s),
                   LEAST("end", %(end)s), gpus, 0, gpus, now()
            FROM hit
            """,
            {**span, "incident": incident.pk},
        )
    return hit


def scalar(sql: str, params=None):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def check_books(tenants: int, displaced: int) -> list[str]:
    from billing.models import CreditNote, Invoice, LedgerEntry, UsageCorrection

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
    ledger = scalar(
        f"SELECT SUM(amount) FROM {LedgerEntry._meta.db_table} WHERE kind = %s",
        [LedgerEntry.Kind.INVOICE],
    )
    if ledger != -totals:
        problems.append(f"ledger {ledger} != -totals {totals}")
    unbilled = scalar("SELECT count(*) FROM billing_usagerecord WHERE invoice_id IS NULL")
    if unbilled:
        problems.append(f"{unbilled} usage rows not on an invoice")
    outage_rows = scalar(
        """SELECT count(*) FROM billing_usagerecord u JOIN marketplace_displacement d
           ON d.reservation_id = u.reservation_id AND u.hour >= d.start AND u.hour < d."end"
        """
    )
    if outage_rows:
        problems.append(f"{outage_rows} usage rows in hours the outage took")
    if UsageCorrection.objects.count() != displaced:
        problems.append("not one usage correction per displacement")
    sla_notes = CreditNote.objects.filter(reason="sla").count()
    if sla_notes != displaced:  # one reservation per tenant, each lost some hours
        problems.append(f"{sla_notes} SLA credit notes for {displaced} displaced tenants")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--hours", type=int, default=100, help="Hours per reservation.")
    args = parser.parse_args()
    if not 0 < args.hours < 744:
        parser.error("--hours must be between 1 and 743 (the reservations lie within March)")

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from core.timeutils import utcnow

    # March is metered up to its end (metering refuses an `until` after now) and finalized
    # once its grace period is over: the runs take `now` at those moments, which must be past.
    after_grace = APRIL + timedelta(days=settings.BILLING_GRACE_DAYS, hours=1)
    if utcnow() < after_grace:
        sys.exit(f"The bench bills March 2026, finalizable from {after_grace:%Y-%m-%d %H:%M} UTC.")

    print(f"Database {DATABASE}: recreating and migrating...", flush=True)
    recreate_database()

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    generate(args.tenants, args.hours)
    print(
        f"Generated {args.tenants} tenants and reservations ({args.hours} h x 8 GPUs each) in "
        f"{time.perf_counter() - started:.1f} s (not measured).",
        flush=True,
    )

    from billing.models import UsageRecord
    from billing.services.corrections import usage_corrections_apply
    from billing.services.invoicing import invoices_draft, invoices_finalize_due
    from billing.services.metering import meter_usage
    from billing.services.sla import sla_credits_issue

    with timed(METER):
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
    with timed(BARE):
        groups = scalar(
            "SELECT count(*) FROM (SELECT tenant_id, SUM(amount) FROM billing_usagerecord "
            "GROUP BY tenant_id) AS per_tenant"
        )
    with timed(DRAFT, f"{args.tenants} tenants"):
        drafted = invoices_draft(now=datetime(2026, 4, 1, 1, tzinfo=UTC))
    displaced = record_late_outage()
    with timed(f"usage corrections: a late outage of {displaced} reservations on drafts"):
        corrected = usage_corrections_apply(now=datetime(2026, 4, 1, 2, tzinfo=UTC))
    assert corrected.done == displaced, corrected
    with timed("usage corrections: nothing to do (the hourly run)"):
        assert usage_corrections_apply(now=datetime(2026, 4, 1, 3, tzinfo=UTC)).done == 0
    with timed(FINALIZE, f"{args.tenants} invoices"):
        finalized = invoices_finalize_due(now=after_grace)
    with timed(f"SLA credits at the month's close ({displaced} displaced)"):
        credited = sla_credits_issue(now=after_grace)

    problems = check_books(args.tenants, displaced)
    failures = drafted.failed + corrected.failed + finalized.failed + credited.failed
    print()
    print(f"Usage rows: {rows:,} ({args.tenants:,} tenants, {groups:,} aggregated groups)")
    print(f"Drafts built: {drafted.done:,}, finalized: {finalized.done:,}, ", end="")
    print(f"SLA credit notes: {credited.done:,}, failures: {len(failures)}")
    print()
    print(f"{'step':<62}{'seconds':>10}")
    for label, elapsed, _ in timings:
        print(f"{label:<62}{elapsed:>10.2f}")
    seconds = {label: elapsed for label, elapsed, _ in timings}
    meter, draft, final = seconds[METER], seconds[DRAFT], seconds[FINALIZE]
    bare = seconds[BARE]
    per_tenant_ms = (draft + final) * 1000 / args.tenants
    print(f"{'meter + draft + finalize the month':<62}{meter + draft + final:>10.2f}")
    print(f"{'... per tenant (draft + finalize), ms':<62}{per_tenant_ms:>10.2f}")
    print(
        f"{'... that is, times the bare SQL aggregate':<62}{(meter + draft + final) / bare:>10.0f}"
    )
    print()
    print("Books check:", "OK" if not problems else "; ".join(problems))
    if problems or failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
