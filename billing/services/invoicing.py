"""Monthly invoices: drafts rebuilt from usage, finalization with gapless numbers, void.

The invoice policy
------------------
* One invoice per tenant, currency and calendar month (UTC). A document never mixes
  currencies: a tenant who books pools priced in two currencies gets two invoices a month.
* Draft while the month runs and for ``BILLING_GRACE_DAYS`` (default 2) after it; a draft's
  lines are rebuilt from its usage on every run, so re-running changes nothing. Then the
  daily finalize run issues it: number, ledger charge (-total), ``Reservation.invoiced_amount``.
  An issued invoice never changes (database trigger, ORM guard, read-only admin); corrections
  are credit notes or void.
* Late usage: a usage record or charge belongs to the invoice of its own month while that
  invoice is a draft (or not created yet); once the month's invoice is issued, to the tenant's
  next invoice — the first later month whose invoice is still a draft. Whichever invoice picks
  a record up first keeps it (``UsageRecord.invoice`` is set once), so nothing is billed twice.
* Usage is what the reservations' placements delivered (metering.py): hours an incident took
  away were never metered, hours it moved to another pool are billed at the reservation's
  locked price, on the reservation's one line. An incident recorded after its hours were
  metered is applied by the usage corrections run (corrections.py): the hours are dropped
  from a draft (which is rebuilt), or credited with a ``correction`` credit note when the
  invoice is already issued.
* SLA credits: when a month's invoices are issued, reservations that lost hours to incidents
  that month (or were moved by a recall inside the pool's notice) get the credit the
  ``SlaCreditRule`` table gives, as one ``sla`` credit note per invoice (sla.py).
* Rounding (``core.money.round_money``, half up to the minor unit): a reservation's line
  bills round(its cumulative metered amount over this and its earlier non-void invoices)
  minus what those earlier lines billed, so a reservation split over months adds up to its
  total (the last month takes the remainder); subtotal, discount and total are sums of
  lines; tax = round(net x tenant tax rate), once per invoice.
* Numbers ``INV-<year of issue>-<6 digits>``, gapless per year (see numbering.py).
* Prepaid credit: at finalization, a positive ledger balance (in the invoice's currency)
  covers the invoice up to its total (``prepaid_applied``); an invoice fully covered is issued
  as ``paid``. Otherwise it is ``paid`` once payments and credit notes cover the rest.

Every change for a tenant runs in a transaction holding that tenant's row lock (locks.py); the
runs take tenants in batches (one transaction and a handful of set-based statements per
batch, not per tenant). Two runs for the same tenant queue up and the second finds the work
done; a run that dies half way rolls back whole (no orphan draft, no used number)."""

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import chain
from typing import Any, cast

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Max, Min, Model, Sum
from django.db.models.functions import TruncMonth

from billing import events, locks, selectors
from billing.db import bulk_set, jit_off, statistics_refresh
from billing.errors import InvoiceNotFinalized, PeriodNotEnded
from billing.models import Charge, Invoice, InvoiceLine, LedgerEntry, UsageRecord
from billing.services import accounts
from billing.services.numbering import INVOICE_SERIES, number_sql, numbers_issue, numbers_reserve
from capacity.models import CapacityPool, GpuModel
from core.errors import ApplicationError
from core.money import MINOR_UNITS, round_money
from core.timeutils import HOUR, utcnow
from marketplace.models import Reservation, Tenant

logger = logging.getLogger(__name__)

ZERO = Decimal("0.00")
HUNDRED = Decimal(100)
# Tenants (or invoices) per transaction in the billing runs: each batch is locked and written
# set-based; a failing batch is retried one tenant at a time so one bad account cannot hold up
# the others. Bookings of a batch's tenants wait for it, so the draft run also closes a batch
# at BATCH_USAGE_ROWS records to claim (claiming costs ~10-20 us a record: a batch holds its
# tenants ~100 ms even when a month is back-filled at once).
BATCH_SIZE = 500
BATCH_USAGE_ROWS = 5_000

Account = tuple[int, str]  # (tenant id, currency)
# progress(total) returns tick(done): the command draws a progress bar with it.
Progress = Callable[[int], Callable[[int], object]]


def _no_progress(total: int) -> Callable[[int], object]:
    return lambda done: None


def month_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(start: datetime) -> datetime:
    return month_start(month_start(start) + timedelta(days=32))


def months_between(start: datetime, end: datetime) -> list[datetime]:
    """Month starts of [start, end): the months a span touches."""
    months, month = [], month_start(start)
    while month < end:
        months.append(month)
        month = next_month(month)
    return months


# --- drafts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claim:
    tenant_id: int
    currency: str
    start: datetime  # the earliest month whose records the invoice takes
    end: datetime  # the invoice's period end
    invoice_id: int


def _claim(tenants: dict[int, Tenant], wanted: set[Account]) -> set[int]:
    """Put the accounts' unclaimed usage and charges on drafts, following the late-usage
    policy; returns the ids of the drafts that (may have) taken something. Tenant locks held.

    A record of month M goes to the first month >= M whose invoice is not issued; its draft
    is created if needed. Months are computed per account, then all accounts are claimed in
    one statement per table."""
    tenant_ids = list(tenants)
    usage_months = (
        UsageRecord.objects.filter(tenant_id__in=tenant_ids, invoice__isnull=True)
        .annotate(month=TruncMonth("hour", tzinfo=UTC))
        .values_list("tenant_id", "currency", "month")
        .distinct()
        .order_by()
    )
    charge_months = (
        Charge.objects.filter(tenant_id__in=tenant_ids, invoice__isnull=True)
        .annotate(month=TruncMonth("incurred_at", tzinfo=UTC))
        .values_list("tenant_id", "currency", "month")
        .distinct()
        .order_by()
    )
    months = sorted(
        {row for row in chain(usage_months, charge_months) if (row[0], row[1]) in wanted}
    )
    if not months:
        return set()
    issued = set(
        Invoice.objects.filter(tenant_id__in=tenant_ids)
        .exclude(status=Invoice.Status.DRAFT)
        .values_list("tenant_id", "currency", "period_start")
    )
    # (tenant, currency, target period) -> the earliest month whose records it takes
    targets: dict[tuple[int, str, datetime], datetime] = {}
    for tenant_id, currency, month in months:
        target = month
        while (tenant_id, currency, target) in issued:
            target = next_month(target)
        targets.setdefault((tenant_id, currency, target), month)

    Invoice.objects.bulk_create(
        [
            Invoice(
                tenant_id=tenant_id,
                currency=currency,
                period_start=period_start,
                period_end=next_month(period_start),
                tax_rate_percent=tenants[tenant_id].tax_rate_percent,
            )
            for tenant_id, currency, period_start in targets
        ],
        ignore_conflicts=True,
    )
    drafts = {
        (tenant_id, currency, period_start): pk
        for pk, tenant_id, currency, period_start in Invoice.objects.filter(
            tenant_id__in=tenant_ids, status=Invoice.Status.DRAFT
        ).values_list("pk", "tenant_id", "currency", "period_start")
    }
    claims = [
        _Claim(
            tenant_id,
            currency,
            first_month,
            next_month(period),
            drafts[tenant_id, currency, period],
        )
        for (tenant_id, currency, period), first_month in targets.items()
    ]
    _assign(UsageRecord, "hour", claims)
    _assign(Charge, "incurred_at", claims)
    return {claim.invoice_id for claim in claims}


def _assign(model: type[UsageRecord] | type[Charge], moment: str, claims: list[_Claim]) -> None:
    """Set ``invoice`` on the model's unclaimed rows of each claim's account and time range."""
    if connection.vendor != "postgresql":
        # Development databases: one UPDATE per account.
        for claim in claims:
            model.objects.filter(
                tenant_id=claim.tenant_id,
                currency=claim.currency,
                invoice__isnull=True,
                **{f"{moment}__gte": claim.start, f"{moment}__lt": claim.end},
            ).update(invoice_id=claim.invoice_id)
        return
    row = "(%s::bigint, %s::varchar, %s::timestamptz, %s::timestamptz, %s::bigint)"
    sql = f"""
        UPDATE {model._meta.db_table} AS r SET invoice_id = c.invoice_id
        FROM (VALUES {", ".join([row] * len(claims))}) AS c(tenant_id, currency, lo, hi, invoice_id)
        WHERE r.invoice_id IS NULL AND r.tenant_id = c.tenant_id AND r.currency = c.currency
          AND r.{moment} >= c.lo AND r.{moment} < c.hi
    """  # noqa: S608 - table and column names come from code, values are parameters
    params = [
        value
        for claim in claims
        for value in (claim.tenant_id, claim.currency, claim.start, claim.end, claim.invoice_id)
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _usage_lines(invoice_ids: list[int], currencies: dict[int, str]) -> list[InvoiceLine]:
    """One line per invoice and reservation over all its usage on the invoice, whatever pools
    an incident moved its GPUs to: the reservation's GPUs, pool and locked price; ``hours``
    the distinct hours billed, ``gpu_hours`` and the amount summed over every record. A
    reservation moved at its unit price is therefore billed as if it had never moved.

    A reservation is rounded once over all its invoices, not once per invoice, so its lines
    add up to round(all it was metered): its total when every hour was delivered, however the
    months split it. A line's amount is the rounded metered amount of the reservation over
    this invoice and its earlier non-void invoices, minus the amounts of its usage lines on
    those earlier invoices (the last month takes the remainder: unit 1.6650, 3 h in January
    and 1 h in February bill 5.00 + 1.66, not 5.00 + 1.67); the gross amount likewise from
    the list price x the GPU-hours, never below the amount. A void invoice counts for nothing
    (its usage is not billed again)."""
    rows = list(
        UsageRecord.objects.filter(invoice_id__in=invoice_ids)
        .values(
            "invoice_id",
            "reservation_id",
            "reservation__gpu_count",
            "reservation__unit_price",
            "reservation__list_price_per_gpu_hour",
            "reservation__pool__slug",
            "reservation__pool__gpu_model__name",
        )
        .annotate(
            hours=Count("hour", distinct=True),
            gpu_hours=Sum("gpu_hours"),
            metered=Sum("amount"),
            first_hour=Min("hour"),
            last_hour=Max("hour"),
        )
        .order_by("invoice_id", "first_hour", "reservation_id")
    )
    amounts = _cumulative_amounts(invoice_ids, rows, currencies)
    lines = []
    for row in rows:  # one row per invoice line, aggregated by the database
        list_price = row["reservation__list_price_per_gpu_hour"]
        amount, gross = amounts[row["invoice_id"], row["reservation_id"]]
        gpus, pool = row["reservation__gpu_count"], row["reservation__pool__slug"]
        gpu_model = row["reservation__pool__gpu_model__name"]
        lines.append(
            InvoiceLine(
                invoice_id=row["invoice_id"],
                kind=InvoiceLine.Kind.USAGE,
                reservation_id=row["reservation_id"],
                description=(
                    f"{gpus} x {gpu_model} on {pool}, "
                    f"{row['first_hour']:%Y-%m-%d %H:00} to "
                    f"{row['last_hour'] + HOUR:%Y-%m-%d %H:00} UTC"
                ),
                gpu_model=gpu_model,
                pool=pool,
                gpus=gpus,
                hours=row["hours"],
                gpu_hours=row["gpu_hours"],
                list_unit_price=list_price,
                unit_price=row["reservation__unit_price"],
                gross_amount=gross,
                discount_amount=gross - amount,
                amount=amount,
                first_hour=row["first_hour"],
                last_hour=row["last_hour"],
            )
        )
    return lines


def _cumulative_amounts(
    invoice_ids: list[int], rows: Sequence[Mapping[str, Any]], currencies: dict[int, str]
) -> dict[tuple[int, object], tuple[Decimal, Decimal]]:
    """``(amount, gross_amount)`` of each (invoice, reservation) usage row of the invoices
    being rebuilt, rounded cumulatively in period order over the reservation's non-void
    invoices (see ``_usage_lines``): the others' figures are read from their records and
    lines, the rebuilt ones' from ``rows``."""
    periods = dict(Invoice.objects.filter(pk__in=invoice_ids).values_list("pk", "period_start"))
    reservation_ids = sorted({row["reservation_id"] for row in rows}, key=str)
    others = Invoice.objects.exclude(pk__in=invoice_ids).exclude(status=Invoice.Status.VOID)
    # reservation -> period -> [metered, gpu_hours, billed amount, billed gross] elsewhere
    history: dict[object, dict[datetime, list[Decimal]]] = defaultdict(
        lambda: defaultdict(lambda: [ZERO, ZERO, ZERO, ZERO])
    )
    for record in (
        UsageRecord.objects.filter(reservation_id__in=reservation_ids, invoice__in=others)
        .values("reservation_id", "invoice__period_start")
        .annotate(metered=Sum("amount"), gpu_hours=Sum("gpu_hours"))
        .order_by()
    ):
        figures = history[record["reservation_id"]][record["invoice__period_start"]]
        figures[0] += record["metered"]
        figures[1] += record["gpu_hours"]
    for billed_line in (
        InvoiceLine.objects.filter(
            kind=InvoiceLine.Kind.USAGE, reservation_id__in=reservation_ids, invoice__in=others
        )
        .values("reservation_id", "invoice__period_start")
        .annotate(amount=Sum("amount"), gross=Sum("gross_amount"))
        .order_by()
    ):
        figures = history[billed_line["reservation_id"]][billed_line["invoice__period_start"]]
        figures[2] += billed_line["amount"]
        figures[3] += billed_line["gross"]

    rebuilt: dict[object, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        rebuilt[row["reservation_id"]].append(row)
    amounts: dict[tuple[int, object], tuple[Decimal, Decimal]] = {}
    for reservation_id, own in rebuilt.items():
        elsewhere = history[reservation_id]
        steps: list[tuple[datetime, Mapping[str, Any] | None]] = [
            (period, None) for period in elsewhere
        ]
        steps += [(periods[row["invoice_id"]], row) for row in own]
        metered = gpu_hours = billed = billed_gross = ZERO
        for period, line in sorted(steps, key=lambda step: step[0]):
            if line is None:  # an invoice not rebuilt here: as it stands
                figures = elsewhere[period]
                metered += figures[0]
                gpu_hours += figures[1]
                billed += figures[2]
                billed_gross += figures[3]
                continue
            currency = currencies[line["invoice_id"]]
            metered += line["metered"]
            gpu_hours += line["gpu_hours"]
            list_price = line["reservation__list_price_per_gpu_hour"]
            # never negative (lines rounded one by one before this rule could make it so)
            amount = max(round_money(metered, currency) - billed, ZERO)
            gross = max(amount, round_money(list_price * gpu_hours, currency) - billed_gross)
            billed += amount
            billed_gross += gross
            amounts[line["invoice_id"], reservation_id] = (amount, gross)
    return amounts


def _charge_lines(invoice_ids: list[int]) -> list[InvoiceLine]:
    charges = (
        Charge.objects.filter(invoice_id__in=invoice_ids)
        .select_related("reservation__pool__gpu_model")
        .order_by("invoice_id", "incurred_at", "pk")
    )
    return [
        InvoiceLine(
            invoice_id=cast(int, charge.invoice_id),  # charges of these invoices
            kind=InvoiceLine.Kind.CANCELLATION_FEE,
            reservation_id=charge.reservation_id,
            description=(
                f"Cancellation fee: {charge.reservation.gpu_count} x "
                f"{charge.reservation.pool.gpu_model.name} on {charge.reservation.pool.slug}, "
                f"cancelled {charge.incurred_at:%Y-%m-%d %H:%M} UTC"
            ),
            gpu_model=charge.reservation.pool.gpu_model.name,
            pool=charge.reservation.pool.slug,
            gpus=charge.reservation.gpu_count,
            gross_amount=charge.amount,
            amount=charge.amount,
            first_hour=charge.incurred_at,
            last_hour=charge.incurred_at,
        )
        for charge in charges
    ]


def _rebuild(invoice_ids: set[int], tenants: dict[int, Tenant], now: datetime) -> set[int]:
    """Replace the drafts' lines and totals with what their usage and charges say; drafts left
    with nothing on them are deleted. Returns the pks of the remaining drafts. Locks held.

    On PostgreSQL a handful of statements for the whole batch (``_rebuild_sql``); elsewhere
    (SQLite in development, which computes decimals as floats) the lines are computed in
    Python with ``round_money``, one bulk INSERT."""
    if connection.vendor == "postgresql":
        return _rebuild_sql(sorted(invoice_ids), now)
    return set(_rebuild_portable(invoice_ids, tenants, now))


def _rebuild_portable(
    invoice_ids: set[int], tenants: dict[int, Tenant], now: datetime
) -> dict[int, Invoice]:
    """``_rebuild`` in Python: returns the remaining drafts by pk."""
    drafts = {
        invoice.pk: invoice
        for invoice in Invoice.objects.filter(pk__in=invoice_ids, status=Invoice.Status.DRAFT)
    }
    if not drafts:
        return {}
    ids = sorted(drafts)
    InvoiceLine.objects.filter(invoice_id__in=ids).delete()
    currencies = {pk: invoice.currency for pk, invoice in drafts.items()}
    lines = _usage_lines(ids, currencies) + _charge_lines(ids)
    InvoiceLine.objects.bulk_create(lines, batch_size=2000)

    by_invoice: dict[int, list[InvoiceLine]] = defaultdict(list)
    for line in lines:
        by_invoice[line.invoice_id].append(line)
    empty = [pk for pk in ids if pk not in by_invoice]
    if empty:
        Invoice.objects.filter(pk__in=empty).delete()
    for pk, invoice_lines in by_invoice.items():
        invoice = drafts[pk]
        rate = tenants[invoice.tenant_id].tax_rate_percent
        subtotal = sum((line.gross_amount for line in invoice_lines), ZERO)
        discount = sum((line.discount_amount for line in invoice_lines), ZERO)
        # Tax once per invoice, on the sum of rounded lines, rounded by the one rule.
        tax = round_money((subtotal - discount) * rate / HUNDRED, invoice.currency)
        invoice.subtotal, invoice.discount_total = subtotal, discount
        invoice.tax_rate_percent, invoice.tax_amount = rate, tax
        invoice.total = subtotal - discount + tax
        invoice.built_at = now
    kept = {pk: drafts[pk] for pk in by_invoice}
    bulk_set(
        list(kept.values()),
        ["subtotal", "discount_total", "tax_rate_percent", "tax_amount", "total", "built_at"],
    )
    return kept


# --- drafts, set-based (PostgreSQL) ------------------------------------------------------------

_USAGE = UsageRecord._meta.db_table
_LINE = InvoiceLine._meta.db_table
_INVOICE = Invoice._meta.db_table
_CHARGE = Charge._meta.db_table
_RESERVATION = Reservation._meta.db_table
_POOL = CapacityPool._meta.db_table
_GPU_MODEL = GpuModel._meta.db_table
_TENANT = Tenant._meta.db_table
# The currencies' minor units (core.money), to round with SQL's round(), which rounds half away
# from zero: half up for the non-negative amounts it is given here.
_MINOR_UNITS = "(VALUES {}) AS m(currency, places)".format(
    ", ".join(f"('{code}', {places})" for code, places in sorted(MINOR_UNITS.items()))
)

# One usage line per (draft, reservation), the figures ``_usage_lines`` computes in Python.
# ``steps`` holds, per reservation, one row per non-void invoice it is on, in period order:
# the drafts being rebuilt (``invoice_id`` set) with their usage, the others as they stand
# (their usage and the amounts their lines billed). With M the metered amount to date, S what
# the other invoices' lines billed to date, and "rebuilt" the rows being rebuilt, the rounding
# rule amount = max(round(M) - billed before, 0) makes what the rebuilt lines bill to date
#     billed_here = max(0, running max over rebuilt rows of round(M) - S),
# and the gross rule gross = max(amount, round(list price x GPU-hours to date) - gross before)
# makes the discount the rebuilt lines give to date
#     discount_here = max(0, running max over rebuilt rows of round(list price x GPU-hours
#                         to date) - other invoices' gross to date - billed_here).
# A line's amount and gross are the steps of billed_here and billed_here + discount_here.
_USAGE_LINES = f"""
    WITH own AS (
        SELECT u.invoice_id, u.reservation_id, count(DISTINCT u.hour) AS hours,
               sum(u.gpu_hours) AS gpu_hours, sum(u.amount) AS metered,
               min(u.hour) AS first_hour, max(u.hour) AS last_hour
        FROM {_USAGE} u
        WHERE u.invoice_id = ANY(%(ids)s)
        GROUP BY u.invoice_id, u.reservation_id
    ), elsewhere AS (
        SELECT x.reservation_id, i.period_start, sum(x.metered) AS metered,
               sum(x.gpu_hours) AS gpu_hours, sum(x.billed) AS billed,
               sum(x.billed_gross) AS billed_gross
        -- per reservation (LATERAL): an index scan each, never a scan of all the usage
        FROM (SELECT DISTINCT reservation_id FROM own) AS rebuilt
        CROSS JOIN LATERAL (
            SELECT u.invoice_id, u.reservation_id, u.amount AS metered, u.gpu_hours,
                   0 AS billed, 0 AS billed_gross
            FROM {_USAGE} u
            WHERE u.reservation_id = rebuilt.reservation_id
              AND NOT u.invoice_id = ANY(%(ids)s)
            UNION ALL
            SELECT l.invoice_id, l.reservation_id, 0, 0, l.amount, l.gross_amount
            FROM {_LINE} l
            WHERE l.reservation_id = rebuilt.reservation_id AND l.kind = %(usage)s
              AND NOT l.invoice_id = ANY(%(ids)s)
        ) AS x
        JOIN {_INVOICE} i ON i.id = x.invoice_id AND i.status <> %(void)s
        GROUP BY x.reservation_id, i.period_start
    ), steps AS (
        SELECT o.invoice_id, o.reservation_id, i.period_start, o.metered, o.gpu_hours,
               0 AS billed, 0 AS billed_gross, m.places
        FROM own o
        JOIN {_INVOICE} i ON i.id = o.invoice_id
        JOIN {_MINOR_UNITS} ON m.currency = i.currency
        UNION ALL
        SELECT NULL, e.reservation_id, e.period_start, e.metered, e.gpu_hours, e.billed,
               e.billed_gross, NULL
        FROM elsewhere e
    ), to_date AS (
        SELECT s.invoice_id, s.reservation_id, s.period_start, s.places,
               r.list_price_per_gpu_hour AS list_price,
               sum(s.metered) OVER w AS metered, sum(s.gpu_hours) OVER w AS gpu_hours,
               sum(s.billed) OVER w AS billed_elsewhere,
               sum(s.billed_gross) OVER w AS gross_elsewhere
        FROM steps s
        JOIN {_RESERVATION} r ON r.id = s.reservation_id
        WINDOW w AS (PARTITION BY s.reservation_id ORDER BY s.period_start
                     ROWS UNBOUNDED PRECEDING)
    ), billed AS (
        SELECT t.*, GREATEST(0, max(
                   CASE WHEN t.invoice_id IS NOT NULL
                        THEN round(t.metered, t.places) - t.billed_elsewhere END
               ) OVER w) AS billed_here
        FROM to_date t
        WINDOW w AS (PARTITION BY t.reservation_id ORDER BY t.period_start
                     ROWS UNBOUNDED PRECEDING)
    ), discounted AS (
        SELECT b.*, GREATEST(0, max(
                   CASE WHEN b.invoice_id IS NOT NULL
                        THEN round(b.list_price * b.gpu_hours, b.places) - b.gross_elsewhere
                             - b.billed_here END
               ) OVER w) AS discount_here
        FROM billed b
        WINDOW w AS (PARTITION BY b.reservation_id ORDER BY b.period_start
                     ROWS UNBOUNDED PRECEDING)
    ), figures AS (
        SELECT d.invoice_id, d.reservation_id,
               d.billed_here - COALESCE(lag(d.billed_here) OVER w, 0) AS amount,
               d.billed_here + d.discount_here
                   - COALESCE(lag(d.billed_here + d.discount_here) OVER w, 0) AS gross
        FROM discounted d
        WINDOW w AS (PARTITION BY d.reservation_id ORDER BY d.period_start)
    )
    INSERT INTO {_LINE}
        (invoice_id, kind, reservation_id, description, gpu_model, pool, gpus, hours,
         gpu_hours, list_unit_price, unit_price, gross_amount, discount_amount, amount,
         first_hour, last_hour)
    SELECT f.invoice_id, %(usage)s, f.reservation_id,
           r.gpu_count || ' x ' || g.name || ' on ' || p.slug || ', '
               || to_char(o.first_hour AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:00') || ' to '
               || to_char((o.last_hour + interval '1 hour') AT TIME ZONE 'UTC',
                          'YYYY-MM-DD HH24:00') || ' UTC',
           g.name, p.slug, r.gpu_count, o.hours, o.gpu_hours, r.list_price_per_gpu_hour,
           r.unit_price, f.gross, f.gross - f.amount, f.amount, o.first_hour, o.last_hour
    FROM figures f
    JOIN own o ON o.invoice_id = f.invoice_id AND o.reservation_id = f.reservation_id
    JOIN {_RESERVATION} r ON r.id = f.reservation_id
    JOIN {_POOL} p ON p.id = r.pool_id
    JOIN {_GPU_MODEL} g ON g.id = p.gpu_model_id
    ORDER BY f.invoice_id, o.first_hour, f.reservation_id
"""  # noqa: S608 - table names come from model metadata, values are parameters

_CHARGE_LINES = f"""
    INSERT INTO {_LINE}
        (invoice_id, kind, reservation_id, description, gpu_model, pool, gpus, hours,
         gpu_hours, list_unit_price, unit_price, gross_amount, discount_amount, amount,
         first_hour, last_hour)
    SELECT c.invoice_id, %(fee)s, c.reservation_id,
           'Cancellation fee: ' || r.gpu_count || ' x ' || g.name || ' on ' || p.slug
               || ', cancelled '
               || to_char(c.incurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC',
           g.name, p.slug, r.gpu_count, 0, 0, 0, 0, c.amount, 0, c.amount,
           c.incurred_at, c.incurred_at
    FROM {_CHARGE} c
    JOIN {_RESERVATION} r ON r.id = c.reservation_id
    JOIN {_POOL} p ON p.id = r.pool_id
    JOIN {_GPU_MODEL} g ON g.id = p.gpu_model_id
    WHERE c.invoice_id = ANY(%(ids)s)
    ORDER BY c.invoice_id, c.incurred_at, c.id
"""  # noqa: S608 - table names come from model metadata, values are parameters

# Totals are sums of the printed lines; tax once per invoice on their net, rounded by the one
# rule, at the tenant's current rate. Returns the drafts that have lines.
_TOTALS = f"""
    UPDATE {_INVOICE} AS i
    SET subtotal = t.subtotal, discount_total = t.discount, tax_rate_percent = t.rate,
        tax_amount = t.tax, total = t.subtotal - t.discount + t.tax, built_at = %(now)s
    FROM (
        SELECT l.invoice_id, sum(l.gross_amount) AS subtotal,
               sum(l.discount_amount) AS discount, tn.tax_rate_percent AS rate,
               round((sum(l.gross_amount) - sum(l.discount_amount)) * tn.tax_rate_percent
                     / 100, m.places) AS tax
        FROM {_LINE} l
        JOIN {_INVOICE} j ON j.id = l.invoice_id
        JOIN {_TENANT} tn ON tn.id = j.tenant_id
        JOIN {_MINOR_UNITS} ON m.currency = j.currency
        WHERE l.invoice_id = ANY(%(ids)s)
        GROUP BY l.invoice_id, tn.tax_rate_percent, m.places
    ) AS t
    WHERE i.id = t.invoice_id
    RETURNING i.id
"""  # noqa: S608 - table names come from model metadata, values are parameters


def _rebuild_sql(invoice_ids: list[int], now: datetime) -> set[int]:
    """``_rebuild`` on PostgreSQL: the lines by INSERT ... SELECT from the usage (grouped per
    draft and reservation, rounded cumulatively as ``_usage_lines`` says) and the charges, the
    totals by one UPDATE ... FROM their sum."""
    ids = list(
        Invoice.objects.filter(pk__in=invoice_ids, status=Invoice.Status.DRAFT)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if not ids:
        return set()
    params: dict[str, Any] = {
        "ids": ids,
        "now": now,
        "usage": InvoiceLine.Kind.USAGE,
        "fee": InvoiceLine.Kind.CANCELLATION_FEE,
        "void": Invoice.Status.VOID,
    }
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {_LINE} WHERE invoice_id = ANY(%(ids)s)", params)  # noqa: S608
        cursor.execute(_USAGE_LINES, params)
        cursor.execute(_CHARGE_LINES, params)
        cursor.execute(_TOTALS, params)
        kept = {pk for (pk,) in cursor.fetchall()}
    empty = [pk for pk in ids if pk not in kept]
    if empty:
        Invoice.objects.filter(pk__in=empty).delete()
    return kept


@transaction.atomic
def invoices_draft_build(
    *,
    tenant_currencies: Sequence[Account],
    invoice_ids: Sequence[int] = (),
    now: datetime | None = None,
) -> int:
    """Claim the accounts' unbilled usage and charges onto drafts and rebuild those drafts
    (and the drafts among ``invoice_ids``, e.g. ones usage was taken off), in one transaction
    under the tenants' locks. Idempotent; concurrent calls for the same tenant queue on its
    lock. Returns how many drafts it rebuilt."""
    now = now or utcnow()
    jit_off()
    owners = Invoice.objects.filter(pk__in=list(invoice_ids)).values_list("tenant_id", flat=True)
    tenants = locks.tenants_lock({tenant_id for tenant_id, _ in tenant_currencies} | set(owners))
    drafts = _claim(tenants, set(tenant_currencies))
    return len(_rebuild(drafts | set(invoice_ids), tenants, now))


def invoice_draft_build(*, tenant_id: int, currency: str, now: datetime | None = None) -> int:
    """``invoices_draft_build`` for one tenant and currency."""
    return invoices_draft_build(tenant_currencies=[(tenant_id, currency)], now=now)


@dataclass
class RunResult:
    done: int = 0
    failed: list[str] = field(default_factory=list)


def _batches(items: list, weights: Sequence[int] | None) -> list[list]:
    """Consecutive batches of at most BATCH_SIZE items and, with ``weights``, at most
    BATCH_USAGE_ROWS of weight (an item heavier than that is a batch of its own)."""
    if weights is None:
        return [items[start : start + BATCH_SIZE] for start in range(0, len(items), BATCH_SIZE)]
    batches: list[list] = []
    batch: list = []
    weight = 0
    for item, item_weight in zip(items, weights, strict=True):
        if batch and (len(batch) == BATCH_SIZE or weight + item_weight > BATCH_USAGE_ROWS):
            batches.append(batch)
            batch, weight = [], 0
        batch.append(item)
        weight += item_weight
    if batch:
        batches.append(batch)
    return batches


def _in_batches(
    items: list,
    work: Callable[[list], int],
    what: str,
    progress: Progress,
    weights: Sequence[int] | None = None,
    grows: type[Model] | None = None,
) -> RunResult:
    """Run ``work`` over ``items`` batch by batch. ``grows``: the table the batches fill; its
    planner statistics are refreshed each time it may have doubled (after batches 1, 2, 4,
    8, ...: ``statistics_refresh``), a handful of ANALYZEs a run."""
    result = RunResult()
    tick = progress(len(items))
    for index, batch in enumerate(_batches(items, weights)):
        if grows is not None and index and index & (index - 1) == 0:
            statistics_refresh(grows)
        try:
            result.done += work(batch)
        except (ApplicationError, DatabaseError):
            # The batch rolled back whole: redo it one by one, so only the culprit fails.
            for item in batch:
                try:
                    result.done += work([item])
                except (ApplicationError, DatabaseError):
                    logger.exception("Billing failed for %s %s", what, item)
                    result.failed.append(f"{what} {item}")
        tick(len(batch))
    return result


def invoices_draft(*, now: datetime | None = None, progress: Progress = _no_progress) -> RunResult:
    """The draft run: every tenant with unbilled usage or charges gets its drafts built, in
    batches of up to BATCH_SIZE tenants and BATCH_USAGE_ROWS records per transaction."""
    now = now or utcnow()
    work = selectors.unbilled_rows_by_account()
    return _in_batches(
        [account for account, _ in work],
        lambda batch: invoices_draft_build(tenant_currencies=batch, now=now),
        "account",
        progress,
        weights=[rows for _, rows in work],
        grows=Invoice,
    )


# --- finalization ------------------------------------------------------------------------------


def _not_finalizable_yet(period_start: datetime, now: datetime) -> str:
    """Why a month cannot be finalized at ``now``, and from when it can."""
    end = next_month(period_start)
    days = settings.BILLING_GRACE_DAYS
    when = end + timedelta(days=days)
    state = "has not ended yet" if now < end else f"ended on {end:%Y-%m-%d %H:%M} UTC"
    return (
        f"{period_start:%B %Y} {state}: it may be finalized from {when:%Y-%m-%d %H:%M} UTC, "
        f"after its {days}-day grace period (BILLING_GRACE_DAYS) for late usage and "
        "corrections."
    )


@transaction.atomic
def invoices_finalize(*, invoice_ids: Sequence[int], now: datetime | None = None) -> list[Invoice]:
    """Issue drafts, all or nothing: pick up their tenants' late usage, rebuild, number them
    (gapless, in period, tenant, currency order), charge the ledger -total (a positive balance
    in the currency covers it up to the total: ``prepaid_applied``, and ``paid`` if it covers
    all), and mark the reservations invoiced. Invoices already issued are skipped (idempotent);
    drafts that turn out empty are dropped. Returns the invoices issued by this call.

    Raises PeriodNotEnded if one of the drafts' months is not over, or still in its grace
    period (BILLING_GRACE_DAYS after its end, for late usage and corrections)."""
    now = now or utcnow()
    jit_off()
    owners = Invoice.objects.filter(pk__in=invoice_ids).values_list("tenant_id", flat=True)
    tenants = locks.tenants_lock(set(owners))
    due = [invoice for invoice in locks.invoices_lock(invoice_ids) if not invoice.is_issued]
    if not due:
        return []
    grace = timedelta(days=settings.BILLING_GRACE_DAYS)
    early = [invoice for invoice in due if now < invoice.period_end + grace]
    if early:
        invoice = min(early, key=lambda invoice: invoice.period_start)
        raise PeriodNotEnded(
            _not_finalizable_yet(invoice.period_start, now),
            extra={
                "period_end": invoice.period_end.isoformat(),
                "finalizable_from": (invoice.period_end + grace).isoformat(),
            },
        )
    touched = _claim(tenants, {(invoice.tenant_id, invoice.currency) for invoice in due})
    kept = _rebuild(touched | {invoice.pk for invoice in due}, tenants, now)
    issuing = [invoice.pk for invoice in due if invoice.pk in kept]
    if not issuing:
        return []

    # Before the numbers: the counter row, the hottest lock in billing, is taken last.
    accounts.reservations_mark_invoiced(invoice_ids=issuing)
    if connection.vendor == "postgresql":
        _issue_sql(issuing, now)
        accounts.ledger_post_many(invoice_ids=issuing)
    else:
        accounts.ledger_post_many(postings=_issue_portable(issuing, tenants, now))
    issued = list(
        Invoice.objects.filter(pk__in=issuing).order_by(
            "period_start", "tenant_id", "currency", "pk"
        )
    )
    events.invoices_event("invoice.finalized", [invoice.pk for invoice in issued], now=now)
    events.invoices_event(
        "invoice.paid",
        [invoice.pk for invoice in issued if invoice.status == Invoice.Status.PAID],
        now=now,
    )
    return issued


# Issue drafts in one UPDATE: numbers in (period, tenant, currency, pk) order from ``first``
# on; prepaid credit from the account's ledger balance, less the totals of the account's
# invoices issued before it in this statement, up to the total (``paid`` when it covers it).
_ISSUE = f"""
    WITH ordered AS (
        SELECT i.id, i.tenant_id, i.currency, i.total,
               row_number() OVER (ORDER BY i.period_start, i.tenant_id, i.currency, i.id)
                   AS position
        FROM {_INVOICE} i
        WHERE i.id = ANY(%(ids)s)
    ), balances AS (
        SELECT e.tenant_id, e.currency, sum(e.amount) AS balance
        FROM {LedgerEntry._meta.db_table} e
        WHERE e.tenant_id IN (SELECT tenant_id FROM ordered)
        GROUP BY e.tenant_id, e.currency
    ), applied AS (
        SELECT o.id, o.position,
               LEAST(GREATEST(COALESCE(b.balance, 0) - COALESCE(sum(o.total) OVER (
                   PARTITION BY o.tenant_id, o.currency ORDER BY o.position
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0), 0), o.total)
                   AS prepaid
        FROM ordered o
        LEFT JOIN balances b ON b.tenant_id = o.tenant_id AND b.currency = o.currency
    )
    UPDATE {_INVOICE} AS i
    SET number = {{number}},
        status = CASE WHEN a.prepaid = i.total THEN %(paid)s ELSE %(finalized)s END,
        finalized_at = %(now)s,
        due_at = %(now)s + make_interval(days => t.payment_terms_days),
        paid_at = CASE WHEN a.prepaid = i.total THEN %(now)s END,
        prepaid_applied = a.prepaid
    FROM applied a, {_TENANT} t
    WHERE i.id = a.id AND t.id = i.tenant_id
"""  # noqa: S608 - table names come from model metadata, values are parameters


def _issue_sql(invoice_ids: list[int], now: datetime) -> None:
    """Number the drafts (gapless: the counter is bumped in this transaction), set their
    status, dates and prepaid credit, in one UPDATE ... FROM (SELECT row_number() ...)."""
    first = numbers_reserve(series=INVOICE_SERIES, year=now.year, count=len(invoice_ids))
    sql = _ISSUE.format(
        number=number_sql(series=INVOICE_SERIES, year=now.year, position="a.position + %(offset)s")
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "ids": invoice_ids,
                "now": now,
                "offset": first - 1,
                "paid": Invoice.Status.PAID,
                "finalized": Invoice.Status.FINALIZED,
            },
        )
        if cursor.rowcount != len(invoice_ids):
            raise DatabaseError(f"Numbered {cursor.rowcount} of {len(invoice_ids)} invoices.")


def _issue_portable(
    invoice_ids: list[int], tenants: dict[int, Tenant], now: datetime
) -> list[accounts.Posting]:
    """``_issue_sql`` in Python (SQLite in development); returns the ledger postings."""
    issuing = sorted(
        Invoice.objects.filter(pk__in=invoice_ids),
        key=lambda invoice: (invoice.period_start, invoice.tenant_id, invoice.currency, invoice.pk),
    )
    numbers = numbers_issue(series=INVOICE_SERIES, year=now.year, count=len(issuing))
    balances = {
        (tenant_id, currency): balance
        for tenant_id, currency, balance in LedgerEntry.objects.filter(tenant_id__in=list(tenants))
        .values("tenant_id", "currency")
        .annotate(balance=Sum("amount"))
        .values_list("tenant_id", "currency", "balance")
    }
    postings = []
    for invoice, number in zip(issuing, numbers, strict=True):
        account = (invoice.tenant_id, invoice.currency)
        balance = balances.get(account, ZERO)
        invoice.prepaid_applied = min(max(balance, ZERO), invoice.total)
        balances[account] = balance - invoice.total
        fully_prepaid = invoice.prepaid_applied == invoice.total
        invoice.status = Invoice.Status.PAID if fully_prepaid else Invoice.Status.FINALIZED
        invoice.number = number
        invoice.finalized_at = now
        invoice.due_at = now + timedelta(days=tenants[invoice.tenant_id].payment_terms_days)
        invoice.paid_at = now if fully_prepaid else None
        if invoice.total:
            postings.append(
                accounts.Posting(
                    tenant_id=invoice.tenant_id,
                    kind=LedgerEntry.Kind.INVOICE,
                    amount=-invoice.total,
                    currency=invoice.currency,
                    reference=number,
                    memo=f"Invoice {number} for {invoice.period_start:%B %Y}",
                )
            )
    bulk_set(issuing, ["status", "number", "finalized_at", "due_at", "paid_at", "prepaid_applied"])
    return postings


def invoice_finalize(*, invoice_id: int, now: datetime | None = None) -> Invoice | None:
    """Issue one draft (see ``invoices_finalize``). Returns the invoice as it now is (also when
    it was already issued), or None when the draft turned out empty and was dropped."""
    issued = invoices_finalize(invoice_ids=[invoice_id], now=now)
    return issued[0] if issued else Invoice.objects.filter(pk=invoice_id).first()


def _finalize_in_batches(ids: list[int], now: datetime, progress: Progress) -> RunResult:
    return _in_batches(
        ids,
        lambda batch: len(invoices_finalize(invoice_ids=batch, now=now)),
        "invoice",
        progress,
    )


def invoices_finalize_due(
    *, now: datetime | None = None, progress: Progress = _no_progress
) -> RunResult:
    """The finalize run: issue every draft whose month ended more than BILLING_GRACE_DAYS ago,
    in batches of BATCH_SIZE invoices per transaction."""
    now = now or utcnow()
    closed_before = now - timedelta(days=settings.BILLING_GRACE_DAYS)
    ids = list(selectors.drafts_due(closed_before=closed_before).values_list("pk", flat=True))
    return _finalize_in_batches(ids, now, progress)


def invoices_finalize_month(
    *, period_start: datetime, now: datetime | None = None, progress: Progress = _no_progress
) -> RunResult:
    """Issue the drafts of one month now (an operator's run; the daily run would issue them
    too). Raises PeriodNotEnded until the month's end plus BILLING_GRACE_DAYS has passed."""
    now = now or utcnow()
    period_start = month_start(period_start)
    finalizable_from = next_month(period_start) + timedelta(days=settings.BILLING_GRACE_DAYS)
    if now < finalizable_from:
        raise PeriodNotEnded(
            _not_finalizable_yet(period_start, now),
            extra={
                "period_end": next_month(period_start).isoformat(),
                "finalizable_from": finalizable_from.isoformat(),
            },
        )
    ids = list(
        Invoice.objects.filter(period_start=period_start, status=Invoice.Status.DRAFT)
        .order_by("tenant_id", "currency")
        .values_list("pk", flat=True)
    )
    return _finalize_in_batches(ids, now, progress)


# --- void --------------------------------------------------------------------------------------


@transaction.atomic
def invoice_void(*, invoice_id: int, reason: str, now: datetime | None = None) -> Invoice:
    """Cancel an issued invoice nobody has paid or credited yet: status ``void`` and the ledger
    charge reversed (an ``adjustment`` of +total). Its usage stays on it and is not re-billed.
    Voiding a void invoice returns it unchanged. Raises InvoiceNotFinalized otherwise."""
    now = now or utcnow()
    tenant_id = Invoice.objects.filter(pk=invoice_id).values_list("tenant_id", flat=True).get()
    tenant = locks.tenant_lock(tenant_id)
    invoice = locks.invoice_lock(invoice_id)
    if invoice.status == Invoice.Status.VOID:
        return invoice
    settlement = selectors.invoice_settlement(invoice=invoice)
    if invoice.status != Invoice.Status.FINALIZED or (
        settlement.paid or settlement.credited or settlement.prepaid_applied
    ):
        raise InvoiceNotFinalized(
            "Only a finalized invoice with no payment, prepaid credit or credit note can be "
            "voided; issue a credit note instead.",
            extra={"status": invoice.status},
        )
    invoice.status = Invoice.Status.VOID
    invoice.voided_at = now
    invoice.void_reason = reason[:500]
    invoice.save(update_fields=["status", "voided_at", "void_reason"])
    if invoice.total:
        accounts.ledger_post(
            tenant=tenant,
            kind=LedgerEntry.Kind.ADJUSTMENT,
            amount=invoice.total,
            currency=invoice.currency,
            reference=f"VOID {invoice.number}",
            memo=f"Invoice {invoice.number} voided: {reason}"[:500],
        )
    return invoice
