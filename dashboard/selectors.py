"""Reads for the operations dashboard, the pool page and the tenant page.

The business figures come from where they are computed for everything else: revenue, cost
and margin and the backup share from ``billing.services.reports`` (the functions behind the
reports page and its CSV downloads, so the dashboard shows what the CSVs say), settlement
from ``billing.selectors``, credit from ``billing.selectors.balance_get``, incident figures
from ``marketplace.selectors.incidents_with_figures`` and the capacity of an hour from
``capacity.selectors``. What is new here are aggregates over the ledger
(``capacity.PoolHour``) and the usage rows, each one grouped query (``values`` +
``annotate``) whatever the number of pools, and a page of pools at a time for the per-pool
charts."""

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from billing.models import Invoice, SlaCredit, UsageRecord
from billing.selectors import Balance, balance_get, with_settlement
from billing.services import reports
from billing.services.invoicing import month_start, next_month
from capacity.models import CapacityPool, Incident, PoolHour
from capacity.selectors import capacity_for_hours, incidents_by_pool
from core.timeutils import hour_range
from events.models import Delivery, WebhookEndpoint
from marketplace.models import Reservation, Tenant
from marketplace.selectors import incidents_with_figures

ZERO = Decimal(0)
DAY = timedelta(days=1)
POOLS_PER_PAGE = 25
TOP_TENANTS = 10
EXPIRY_DAYS = 90
WINDOW_DAYS = 30


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


def report_months(now: datetime) -> tuple[datetime, datetime, datetime]:
    """(first month, last month, end of the last month): the last three months up to the
    current one, the default of the reports page."""
    last = month_start(now)
    first = month_start(month_start(last - DAY) - DAY)
    return first, last, next_month(last)


def _plain(quantity: Decimal) -> Decimal:
    """GPU-hours without trailing zeros, as the reports write them (80, not 80.0000)."""
    return (
        quantity.quantize(Decimal(1))
        if quantity == quantity.to_integral()
        else quantity.normalize()
    )


def _number(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


# --- revenue, cost and margin ------------------------------------------------------------------


@dataclass(frozen=True)
class MarginChart:
    report: reports.Report
    months: list[str]
    providers: list[str]
    revenue: dict[str, list[float | None]]  # provider -> per month
    cost: dict[str, list[float | None]]  # provider -> sold + idle cost per month
    margin: list[float | None]  # all providers, per month


# What the margin report reads; when none of it changed, the report built last is still right.
# (The report walks every pool's days in Python for the idle cost: hundreds of milliseconds.)
_BOOKS_FINGERPRINT = """
    SELECT (SELECT max(id) FROM billing_usagerecord),
           (SELECT max(metered_until) FROM billing_meteringcursor),
           (SELECT count(*) FROM billing_invoice), (SELECT max(id) FROM billing_invoice),
           (SELECT max(finalized_at) FROM billing_invoice),
           (SELECT max(paid_at) FROM billing_invoice),
           (SELECT max(voided_at) FROM billing_invoice),
           (SELECT max(id) FROM billing_creditnote),
           (SELECT max(id) FROM billing_charge),
           (SELECT max(id) FROM billing_usagecorrection),
           (SELECT count(*) FROM billing_fxrate), (SELECT max(id) FROM billing_fxrate),
           (SELECT sum(rate) FROM billing_fxrate),
           (SELECT count(*) FROM capacity_poolcostrate),
           (SELECT max(id) FROM capacity_poolcostrate),
           (SELECT max(updated_at) FROM capacity_capacitypool),
           (SELECT count(*) FROM capacity_incident), (SELECT max(id) FROM capacity_incident),
           (SELECT max(closed_at) FROM capacity_incident)
"""
MARGIN_CACHE_SECONDS = 600


def _books_fingerprint() -> str:
    with connection.cursor() as cursor:
        cursor.execute(_BOOKS_FINGERPRINT)
        return repr(cursor.fetchone())


def margin_report_cached(*, start: datetime, end: datetime) -> reports.Report:
    """``reports.margin_report`` for [start, end), kept in the cache (at most
    ``MARGIN_CACHE_SECONDS``) while nothing it reads has changed: the key holds the range, the
    reporting currency and a fingerprint of the usage rows, invoices, credit notes, fees,
    corrections, FX rates, cost rates, pools and incidents (one query)."""
    key = (
        "dashboard:margin:"
        + hashlib.sha256(
            f"{start.isoformat()}|{end.isoformat()}|{settings.REPORTING_CURRENCY}|"
            f"{_books_fingerprint()}".encode()
        ).hexdigest()
    )
    report = cache.get(key)
    if report is None:
        report = reports.margin_report(start=start, end=end)
        cache.set(key, report, MARGIN_CACHE_SECONDS)
    return report


def margin_chart(*, start: datetime, end: datetime) -> MarginChart:
    """``reports.margin_report`` per month and provider (``margin_report_cached``), arranged
    for stacked bars: revenue and provider cost (sold + idle) per provider, and the month's
    margin. A figure the report leaves blank (a missing FX rate) stays blank."""
    report = margin_report_cached(start=start, end=end)
    column = {name: index for index, name in enumerate(report.columns)}
    months = sorted({str(row[column["month"]]) for row in report.rows})
    providers = sorted({str(row[column["provider"]]) for row in report.rows})
    revenue: dict[str, list[float | None]] = {p: [0.0] * len(months) for p in providers}
    cost: dict[str, list[float | None]] = {p: [0.0] * len(months) for p in providers}
    margin: list[Decimal | None] = [ZERO] * len(months)
    for row in report.rows:
        at, provider = months.index(str(row[column["month"]])), str(row[column["provider"]])
        sold, idle = row[column["sold_cost"]], row[column["idle_cost"]]
        revenue[provider][at] = _number(row[column["revenue"]])
        cost[provider][at] = None if sold is None or idle is None else float(sold + idle)  # type: ignore[operator]
        row_margin = row[column["margin"]]
        total = margin[at]
        margin[at] = None if total is None or row_margin is None else total + row_margin  # type: ignore[operator]
    return MarginChart(report, months, providers, revenue, cost, [_number(m) for m in margin])


# --- the ledger: utilisation and outlook per pool and day --------------------------------------


def pool_page(*, provider: str | None, page: int) -> tuple[list[CapacityPool], int, int]:
    """A page of pools (by provider, then slug), the page shown and the number of pages."""
    pools = CapacityPool.objects.select_related("region__provider", "gpu_model").order_by(
        "region__provider__name", "slug"
    )
    if provider:
        pools = pools.filter(region__provider__slug=provider)
    count = pools.count()
    pages = max(1, -(-count // POOLS_PER_PAGE))
    page = min(max(1, page), pages)
    first = (page - 1) * POOLS_PER_PAGE
    return list(pools[first : first + POOLS_PER_PAGE]), page, pages


@dataclass
class LedgerDay:
    capacity: int = 0  # GPU-hours that may be sold
    booked: int = 0  # GPU-hours booked

    @property
    def percent(self) -> Decimal | None:
        if not self.capacity:
            return None
        return (Decimal(100) * self.booked / self.capacity).quantize(Decimal("0.1"))

    @property
    def cell(self) -> tuple[str, str, str, str]:
        """(booked, capacity, percent shown, shade 0-100) as text for the heatmap cell:
        rendered as they are, so a page of 750 cells costs no number formatting."""
        percent = self.percent
        shown = "–" if percent is None else f"{percent:.0f}"
        shade = "0" if percent is None else f"{min(percent, Decimal(100)):.0f}"
        return str(self.booked), str(self.capacity), shown, shade


def _contract_hours(pool: CapacityPool, start: datetime, end: datetime) -> int:
    inside = min(end, pool.available_until) - max(start, pool.available_from)
    return max(0, int(inside.total_seconds()) // 3600)


def ledger_by_pool_and_day(
    pools: Sequence[CapacityPool], start: datetime, end: datetime
) -> dict[int, dict[date, LedgerDay]]:
    """Capacity and booked GPU-hours of each pool per UTC day of [start, end) (midnights),
    from the capacity ledger in one grouped query. An hour with a ledger row counts its
    ``capacity`` and ``booked``; an hour nobody has booked yet has no row, nothing booked and
    the pool's sellable GPUs (total − hold-back) as capacity if it lies in the contract
    window (an incident lowers the capacity of the rows it covers: ``capacity.PoolHour``)."""
    rows = (
        PoolHour.objects.filter(pool__in=pools, hour__gte=start, hour__lt=end)
        .annotate(day=TruncDate("hour", tzinfo=UTC))
        .values_list("pool_id", "day")
        .annotate(capacity=Sum("capacity"), booked=Sum("booked"), hours=Count("id"))
        .order_by()
    )
    found = {
        (pool_id, day): (capacity, booked, hours) for pool_id, day, capacity, booked, hours in rows
    }
    result: dict[int, dict[date, LedgerDay]] = {}
    for pool in pools:
        days = result[pool.pk] = {}
        day = start
        while day < end:
            capacity, booked, hours = found.get((pool.pk, day.date()), (0, 0, 0))
            contract = _contract_hours(pool, day, day + DAY)
            unbooked_hours = max(0, contract - hours)
            days[day.date()] = LedgerDay(
                capacity=capacity + unbooked_hours * max(0, pool.sellable_gpus), booked=booked
            )
            day += DAY
    return result


@dataclass
class PoolUtilisation:
    pool: CapacityPool
    past: LedgerDay  # the past WINDOW_DAYS days, summed
    outlook: list[LedgerDay]  # each of the next WINDOW_DAYS days


def pool_utilisation(pools: Sequence[CapacityPool], today: datetime) -> list[PoolUtilisation]:
    """For each pool: booked against capacity over the past ``WINDOW_DAYS`` days (up to
    ``today``, a midnight) and per day for the next ``WINDOW_DAYS`` days from ``today``."""
    ledger = ledger_by_pool_and_day(pools, today - WINDOW_DAYS * DAY, today + WINDOW_DAYS * DAY)
    result = []
    for pool in pools:
        days = ledger[pool.pk]
        past = LedgerDay()
        for offset in range(WINDOW_DAYS, 0, -1):
            day = days[(today - offset * DAY).date()]
            past.capacity += day.capacity
            past.booked += day.booked
        outlook = [days[(today + offset * DAY).date()] for offset in range(WINDOW_DAYS)]
        result.append(PoolUtilisation(pool, past, outlook))
    return result


# --- what needs attention ----------------------------------------------------------------------


def contracts_ending(now: datetime, days: int = EXPIRY_DAYS) -> QuerySet[CapacityPool]:
    """Active pools whose provider contract ends within ``days`` days of ``now``."""
    return (
        CapacityPool.objects.select_related("region__provider", "gpu_model")
        .filter(available_until__gt=now, available_until__lte=now + days * DAY)
        .exclude(status=CapacityPool.Status.RETIRED)
        .order_by("available_until", "slug")
    )


@dataclass(frozen=True)
class TenantUsage:
    tenant: Tenant
    currency: str
    gpu_hours: Decimal
    amount: Decimal


def top_tenants(start: datetime, end: datetime, limit: int = TOP_TENANTS) -> list[TenantUsage]:
    """The tenants that used the most GPU-hours in [start, end) (metered usage), with the
    metered amount in their currency; one grouped query."""
    rows = list(
        UsageRecord.objects.filter(hour__gte=start, hour__lt=end)
        .values_list("tenant_id", "currency")
        .annotate(gpu_hours=Sum("gpu_hours"), amount=Sum("amount"))
        .order_by("-gpu_hours", "tenant_id")[:limit]
    )
    tenants = Tenant.objects.in_bulk([row[0] for row in rows])
    return [
        TenantUsage(
            tenants[tenant_id], currency, _plain(gpu_hours), amount.quantize(Decimal("0.01"))
        )
        for tenant_id, currency, gpu_hours, amount in rows
    ]


def incidents_open(now: datetime) -> QuerySet[Incident]:
    """Incidents not over at ``now`` (open, or ending later; planned ones starting within
    ``WINDOW_DAYS`` days included), with what they did (``incidents_with_figures``)."""
    return incidents_with_figures(
        Incident.objects.select_related("pool__region__provider")
        .filter(start__lt=now + WINDOW_DAYS * DAY)
        .filter(Q(end__isnull=True) | Q(end__gt=now))
        .order_by("start", "pk")
    )


@dataclass(frozen=True)
class SlaCredits:
    months: list[str]
    currencies: list[str]
    amounts: dict[str, list[Decimal]]  # currency -> per month
    count: dict[str, list[int]]


def sla_credits_by_month(start: datetime, end: datetime) -> SlaCredits:
    """SLA credits per month they are for (``period_start``) and currency."""
    rows = (
        SlaCredit.objects.filter(period_start__gte=start, period_start__lt=end)
        .values_list("period_start", "currency")
        .annotate(amount=Sum("amount"), count=Count("id"))
        .order_by()
    )
    months = []
    month = start
    while month < end:
        months.append(f"{month:%Y-%m}")
        month = next_month(month)
    amounts: dict[str, list[Decimal]] = defaultdict(lambda: [ZERO] * len(months))
    count: dict[str, list[int]] = defaultdict(lambda: [0] * len(months))
    for period_start, currency, amount, number in rows:
        at = months.index(f"{month_start(period_start):%Y-%m}")
        amounts[currency][at] += amount
        count[currency][at] += number
    currencies = sorted(amounts)
    return SlaCredits(months, currencies, dict(amounts), dict(count))


def invoices_overdue(now: datetime) -> QuerySet[Any]:
    """Invoices past their due date with something still due (``billing.selectors``)."""
    return (
        with_settlement(Invoice.objects.select_related("tenant"), now=now)
        .filter(overdue=True)
        .order_by("due_at", "number")
    )


def endpoints_failing(now: datetime) -> list[dict[str, Any]]:
    """Webhook endpoints failing now (``failing_since`` set), disabled for failing (or 410
    Gone), or with failed deliveries in the past seven days; with that count and the
    tenant."""
    failing = [WebhookEndpoint.DisabledReason.FAILING, WebhookEndpoint.DisabledReason.GONE]
    endpoints = list(
        WebhookEndpoint.objects.annotate(
            failed_recently=Count(
                "deliveries",
                filter=Q(
                    deliveries__status=Delivery.Status.FAILED,
                    deliveries__created_at__gte=now - 7 * DAY,
                ),
            )
        )
        .filter(
            Q(failing_since__isnull=False)
            | Q(enabled=False, disabled_reason__in=failing)
            | Q(failed_recently__gt=0)
        )
        .order_by("failing_since", "pk")
    )
    tenants = Tenant.objects.in_bulk({endpoint.tenant_id for endpoint in endpoints})
    return [
        {"endpoint": endpoint, "tenant": tenants.get(endpoint.tenant_id)} for endpoint in endpoints
    ]


# --- the pool page -----------------------------------------------------------------------------


@dataclass
class PoolHourFigures:
    hour: datetime
    capacity: int
    booked: int
    maintenance: int  # GPUs out for planned maintenance
    incidents: int  # GPUs out for outages, recalls and reclaims


def pool_timeline(pool: CapacityPool, start: datetime, end: datetime) -> list[PoolHourFigures]:
    """Each hour of [start, end): the ledger's capacity and booked GPUs (an hour without a
    row: ``capacity.selectors.capacity_for_hours``, nothing booked) and the GPUs out in
    maintenance and in other incidents covering it."""
    hours = hour_range(start, end)
    ledger = {
        hour: (capacity, booked)
        for hour, capacity, booked in PoolHour.objects.filter(
            pool=pool, hour__gte=start, hour__lt=end
        ).values_list("hour", "capacity", "booked")
    }
    incidents = incidents_by_pool([pool.pk], start, end).get(pool.pk, [])
    computed = capacity_for_hours(
        pool, [hour for hour in hours if hour not in ledger], incidents=incidents
    )
    figures = []
    for hour in hours:
        capacity, booked = ledger.get(hour, (computed.get(hour, 0), 0))
        out: defaultdict[bool, int] = defaultdict(int)
        for incident in incidents:
            if incident.covers(hour):
                out[incident.kind == Incident.Kind.MAINTENANCE] += incident.gpus
        figures.append(PoolHourFigures(hour, capacity, booked, out[True], out[False]))
    return figures


# --- the tenant page ---------------------------------------------------------------------------


@dataclass
class TenantFigures:
    balance: Balance
    usage_days: list[str] = field(default_factory=list)
    usage_gpu_hours: list[Decimal] = field(default_factory=list)
    usage_amount: list[Decimal] = field(default_factory=list)


def tenant_usage_by_day(tenant: Tenant, start: datetime, end: datetime) -> TenantFigures:
    """The tenant's metered GPU-hours and amount per UTC day of [start, end) (one grouped
    query) and its credit figures (``billing.selectors.balance_get``)."""
    rows = {
        day: (gpu_hours, amount)
        for day, gpu_hours, amount in UsageRecord.objects.filter(
            tenant=tenant, hour__gte=start, hour__lt=end
        )
        .annotate(day=TruncDate("hour", tzinfo=UTC))
        .values_list("day")
        .annotate(gpu_hours=Sum("gpu_hours"), amount=Sum("amount"))
        .values_list("day", "gpu_hours", "amount")
        .order_by()
    }
    figures = TenantFigures(balance=balance_get(tenant=tenant))
    day = start
    while day < end:
        gpu_hours, amount = rows.get(day.date(), (ZERO, ZERO))
        figures.usage_days.append(f"{day:%Y-%m-%d}")
        figures.usage_gpu_hours.append(_plain(gpu_hours))
        figures.usage_amount.append(amount.quantize(Decimal("0.01")))
        day += DAY
    return figures


def tenant_invoices(tenant: Tenant) -> QuerySet[Any]:
    return with_settlement(Invoice.objects.filter(tenant=tenant)).order_by(
        "-period_start", "currency"
    )


def tenant_reservations(tenant: Tenant, limit: int = 50) -> QuerySet[Reservation]:
    return (
        Reservation.objects.filter(tenant=tenant).select_related("pool").order_by("-start")[:limit]
    )
