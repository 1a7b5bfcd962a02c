"""Billing at scale: meter and invoice a month for 10,000 tenants and 1,000,000 usage rows.

Usage: .venv/bin/python bench/billing.py [--tenants 10000] [--hours 100]

BENCH_SCALE multiplies the tenants (and so the usage rows): BENCH_SCALE=10 bills 10M rows.

Creates (drops first) the database ``gpu_marketplace_bench_billing`` on the PostgreSQL server
of BENCH_DATABASE_SERVER (default postgres://postgres@127.0.0.1:5432), migrates it, and
generates tenants, completed March reservations, their placements and the capacity ledger
rows they hold with INSERT ... SELECT (not measured). First, its ceiling, the bare pipeline in
SQL: one INSERT ... SELECT of the month's usage rows (placements expanded to hours, priced)
into a scratch copy of the usage table (same columns and indexes, the unique one included,
ON CONFLICT DO NOTHING), then one GROUP BY of them into invoice-line-shaped rows (one per
reservation: GPUs, hours, GPU-hours, unit price, rounded amount, first and last hour). Then it
measures, through the real services:

1. metering the whole month in one back-fill run (one usage row per placement-hour),
2. a steady-state hourly metering run afterwards,
3. the draft run (batches of tenants),
4. the usage corrections of an outage recorded after metering (4 hours of one pool, written
   as the marketplace leaves it: cut placements and displacements), then a correction run
   with nothing to do,
5. the finalize run (batches of invoices), 6. the SLA credits of the month's close,

and prints meter + draft + finalize against the bare pipeline (goal: at most 4 times). The
scratch rows must equal what metering wrote (count and amount), or the ceiling is not the same
work. It ends by checking the books: one invoice per tenant, gapless numbers, line totals
equal to the rounded per-reservation sums, the ledger equal to minus the invoice totals, one
SLA credit note per displaced tenant; and the capacity ledger (bench/benchlib.py): every hour
within capacity and equal to its placements. Exit 1 if a check fails. Figures go to
var/bench/billing.json for bench/summary.py."""

import argparse
import os
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import ledger_problems, row, scaled, write_results  # noqa: E402

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
BARE_USAGE = "bare: usage rows by INSERT ... SELECT into a scratch table"
BARE_LINES = "bare: one GROUP BY into invoice-line-shaped rows"
GOAL_TIMES_BARE = 4
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
        # The capacity ledger those placements hold, as booking leaves it.
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
        # The GPUs the outage took are no longer booked on the ledger.
        cursor.execute(
            """
            UPDATE capacity_poolhour h SET booked = h.booked - taken.gpus
            FROM (
                SELECT d.start + n * interval '1 hour' AS hour, sum(d.gpus_taken) AS gpus
                FROM marketplace_displacement d
                CROSS JOIN LATERAL generate_series(
                    0, (EXTRACT(EPOCH FROM d."end" - d.start) / 3600)::int - 1) AS n
                WHERE d.incident_id = %(incident)s
                GROUP BY 1
            ) AS taken
            WHERE h.pool_id = %(pool)s AND h.hour = taken.hour
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
    problems.extend(f"ledger: {problem}" for problem in ledger_problems())
    return problems


def bare_pipeline() -> int:
    """The ceiling, in SQL: the month's usage rows into a scratch copy of the usage table,
    then one GROUP BY into invoice-line-shaped rows. Returns the scratch usage rows."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_usage, bench_invoice_line")
        cursor.execute("CREATE TABLE bench_usage (LIKE billing_usagerecord INCLUDING ALL)")
        with timed(BARE_USAGE):
            cursor.execute(
                """
                INSERT INTO bench_usage
                    (reservation_id, tenant_id, pool_id, hour, gpus, gpu_hours, unit_price,
                     amount, cost_per_gpu_hour, provider_cost, currency, invoice_id, created_at)
                SELECT r.id, r.tenant_id, pl.pool_id, h.hour, sum(pl.gpus), sum(pl.gpus),
                       r.unit_price, r.unit_price * sum(pl.gpus), p.cost_per_gpu_hour,
                       p.cost_per_gpu_hour * sum(pl.gpus), r.currency, NULL, now()
                FROM marketplace_placement pl
                JOIN marketplace_reservation r ON r.id = pl.reservation_id
                JOIN capacity_capacitypool p ON p.id = pl.pool_id
                CROSS JOIN LATERAL generate_series(
                    pl.start, LEAST(pl."end", %(until)s) - interval '1 hour', interval '1 hour'
                ) AS h(hour)
                WHERE r.status = 'completed' AND pl.start < %(until)s
                GROUP BY r.id, pl.pool_id, h.hour, p.cost_per_gpu_hour
                ON CONFLICT (reservation_id, hour, pool_id) DO NOTHING
                """,
                {"until": APRIL},
            )
            rows = cursor.rowcount
        with timed(BARE_LINES):
            cursor.execute(
                """
                CREATE TABLE bench_invoice_line AS
                SELECT u.tenant_id, u.reservation_id, 'usage' AS kind, max(u.gpus) AS gpus,
                       count(DISTINCT u.hour) AS hours, sum(u.gpu_hours) AS gpu_hours,
                       u.unit_price, round(sum(u.amount), 2) AS amount,
                       min(u.hour) AS first_hour, max(u.hour) AS last_hour
                FROM bench_usage u
                GROUP BY u.tenant_id, u.reservation_id, u.unit_price
                """
            )
    return rows


def bare_matches_metering() -> list[str]:
    """The bare pipeline did the same work as the services: same rows, same amounts."""
    bare = scalar("SELECT count(*) || ' rows, ' || sum(amount) FROM bench_usage")
    metered = scalar("SELECT count(*) || ' rows, ' || sum(amount) FROM billing_usagerecord")
    lines = scalar("SELECT sum(amount) FROM bench_invoice_line")
    rounded = scalar(
        "SELECT sum(round(s, 2)) FROM (SELECT sum(amount) AS s FROM billing_usagerecord "
        "GROUP BY reservation_id) AS per_reservation"
    )
    problems = []
    if bare != metered:
        problems.append(f"bare usage ({bare}) differs from metering ({metered})")
    if lines != rounded:
        problems.append(f"bare lines ({lines}) differ from the rounded usage ({rounded})")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tenants", type=int, default=scaled(10_000), help="default 10,000 x BENCH_SCALE"
    )
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

    from django.db import connection

    bare_rows = bare_pipeline()
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
    mismatches = bare_matches_metering()
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_usage, bench_invoice_line")
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
    print(f"Usage rows: {rows:,} ({args.tenants:,} tenants; the bare pipeline wrote {bare_rows:,})")
    print(f"Drafts built: {drafted.done:,}, finalized: {finalized.done:,}, ", end="")
    print(f"SLA credit notes: {credited.done:,}, failures: {len(failures)}")
    print()
    print(f"{'step':<62}{'seconds':>10}")
    for label, elapsed, _ in timings:
        print(f"{label:<62}{elapsed:>10.2f}")
    seconds = {label: elapsed for label, elapsed, _ in timings}
    meter, draft, final = seconds[METER], seconds[DRAFT], seconds[FINALIZE]
    bare = seconds[BARE_USAGE] + seconds[BARE_LINES]
    per_tenant_ms = (draft + final) * 1000 / args.tenants
    times_bare = (meter + draft + final) / bare
    print(f"{'meter + draft + finalize the month':<62}{meter + draft + final:>10.2f}")
    print(f"{'... per tenant (draft + finalize), ms':<62}{per_tenant_ms:>10.2f}")
    print(f"{'the bare pipeline (usage rows + invoice-line rows)':<62}{bare:>10.2f}")
    print(
        f"{'... meter + draft + finalize, times the bare pipeline':<62}{times_bare:>10.1f}"
        f"   goal <= {GOAL_TIMES_BARE}: {'ok' if times_bare <= GOAL_TIMES_BARE else 'short'}"
    )
    print()
    if mismatches:
        print("The bare pipeline did not do the services' work:", "; ".join(mismatches))
    print("Books check:", "OK" if not problems else "; ".join(problems))
    if failures:
        problems.append(f"{len(failures)} failed billing runs")
    write_results(
        "billing",
        [
            row(
                f"meter + draft + finalize / bare pipeline ({rows:,} usage rows)",
                f"{times_bare:.1f}x ({meter + draft + final:.1f} s vs {bare:.1f} s)",
                f"<= {GOAL_TIMES_BARE}x",
                times_bare <= GOAL_TIMES_BARE and not mismatches,
            )
        ],
        guarantee_ok=not problems,
        problems=problems,
    )
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
