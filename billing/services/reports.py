"""Operator reports: revenue, provider cost and gross margin; utilisation; backup-tier share.

Revenue is metered (accrual) revenue: usage amounts plus cancellation fees, by the month the
hour was delivered (or the fee incurred), whatever invoice it ends up on. Every figure over
usage rows is aggregated by the database (``values`` + ``annotate``); Python only merges the
aggregated rows and rounds them for display (``core.money.round_money``). Amounts of different
currencies are never added up: each currency is its own row."""

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import Q, Sum
from django.db.models.functions import TruncMonth

from billing.models import Charge, UsageRecord
from billing.services.invoicing import month_start, months_between, next_month
from capacity.models import CapacityPool, Incident
from core.money import round_money
from core.timeutils import HOUR, hour_range

ZERO = Decimal(0)


@dataclass(frozen=True)
class Report:
    slug: str
    title: str
    columns: list[str]
    rows: list[list[object]]

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return buffer.getvalue()


def _hours(duration: timedelta) -> Decimal:
    return Decimal(int(duration.total_seconds())) / Decimal(3600)


def _plain(quantity: Decimal) -> Decimal:
    """GPU-hours without trailing zeros, never in exponent form (80, not 8E+1)."""
    return (
        quantity.quantize(Decimal(1))
        if quantity == quantity.to_integral()
        else quantity.normalize()
    )


def _percent(part: Decimal, whole: Decimal) -> Decimal | None:
    if not whole:
        return None
    return (Decimal(100) * part / whole).quantize(Decimal("0.01"))


def margin_report(*, start: datetime, end: datetime) -> Report:
    """Per month, provider, pool and currency: GPU-hours sold, usage revenue, cancellation
    fees, provider cost, gross margin and margin percent."""
    usage = (
        UsageRecord.objects.filter(hour__gte=start, hour__lt=end)
        .annotate(month=TruncMonth("hour", tzinfo=UTC))
        .values("month", "pool__region__provider__name", "pool__slug", "pool__tier", "currency")
        .annotate(gpu_hours=Sum("gpu_hours"), revenue=Sum("amount"), cost=Sum("provider_cost"))
        .order_by()
    )
    fees = (
        Charge.objects.filter(incurred_at__gte=start, incurred_at__lt=end)
        .annotate(month=TruncMonth("incurred_at", tzinfo=UTC))
        .values(
            "month",
            "reservation__pool__region__provider__name",
            "reservation__pool__slug",
            "reservation__pool__tier",
            "currency",
        )
        .annotate(fees=Sum("amount"))
        .order_by()
    )
    merged: dict[tuple, dict[str, Decimal]] = defaultdict(
        lambda: {"gpu_hours": ZERO, "revenue": ZERO, "fees": ZERO, "cost": ZERO}
    )
    for row in usage:
        key = (
            row["month"],
            row["pool__region__provider__name"],
            row["pool__slug"],
            row["pool__tier"],
            row["currency"],
        )
        merged[key].update(gpu_hours=row["gpu_hours"], revenue=row["revenue"], cost=row["cost"])
    for row in fees:
        key = (
            row["month"],
            row["reservation__pool__region__provider__name"],
            row["reservation__pool__slug"],
            row["reservation__pool__tier"],
            row["currency"],
        )
        merged[key]["fees"] = row["fees"]
    rows = []
    for (month, provider, pool, tier, currency), figures in sorted(merged.items()):
        revenue = round_money(figures["revenue"] + figures["fees"], currency)
        cost = round_money(figures["cost"], currency)
        rows.append(
            [
                f"{month:%Y-%m}",
                provider,
                pool,
                tier,
                currency,
                _plain(figures["gpu_hours"]),
                round_money(figures["revenue"], currency),
                round_money(figures["fees"], currency),
                revenue,
                cost,
                revenue - cost,
                _percent(revenue - cost, revenue),
            ]
        )
    return Report(
        slug="margin",
        title="Revenue, provider cost and gross margin per provider, pool and month",
        columns=[
            "month",
            "provider",
            "pool",
            "tier",
            "currency",
            "gpu_hours",
            "usage_revenue",
            "cancellation_fees",
            "revenue",
            "provider_cost",
            "gross_margin",
            "margin_percent",
        ],
        rows=rows,
    )


def _available_gpu_hours(
    pools: list[CapacityPool], months: list[datetime], end: datetime
) -> dict[tuple[int, datetime], Decimal]:
    """Sellable GPU-hours per pool and month: the contract window's hours in the month times
    the GPUs offered (total minus hold-back), minus the GPUs incidents (outages, recalls,
    reclaims, maintenance) took out in each of those hours, never more than were offered in
    the hour. An open incident counts up to ``end``, the report's end. Computed from the
    pools' configuration and incidents, not from usage rows."""
    first, last = months[0], next_month(months[-1])
    incidents = (
        Incident.objects.filter(pool__in=pools, start__lt=min(end, last))
        .filter(Q(end__isnull=True) | Q(end__gt=first))
        .values_list("pool_id", "start", "end", "gpus")
    )
    out: dict[int, dict[datetime, int]] = defaultdict(lambda: defaultdict(int))
    for pool_id, start, incident_end, gpus in incidents:
        stop = min(incident_end or end, last)
        for hour in hour_range(max(start, first), stop) if stop > start else []:
            out[pool_id][hour] += gpus
    available = {}
    for pool in pools:
        lost: dict[datetime, int] = defaultdict(int)
        for hour, gpus in out[pool.pk].items():
            if pool.available_from <= hour and hour + HOUR <= pool.available_until:
                lost[month_start(hour)] += min(gpus, pool.sellable_gpus)
        for month in months:
            contract = min(pool.available_until, next_month(month)) - max(
                pool.available_from, month
            )
            hours = max(_hours(contract), ZERO)
            available[pool.pk, month] = max(ZERO, hours * pool.sellable_gpus - lost[month])
    return available


def utilisation_report(*, start: datetime, end: datetime) -> Report:
    """Per pool and month: sold GPU-hours (metered: the usage rows of the pool, which follow
    the placements, so GPUs an incident moved count on the pool they ran on) / available
    GPU-hours (see ``_available_gpu_hours``)."""
    months = months_between(start, end)
    sold = {
        (row["pool_id"], row["month"]): row["sold"]
        for row in UsageRecord.objects.filter(hour__gte=months[0], hour__lt=end)
        .annotate(month=TruncMonth("hour", tzinfo=UTC))
        .values("pool_id", "month")
        .annotate(sold=Sum("gpu_hours"))
        .order_by()
    }
    pools = list(
        CapacityPool.objects.select_related("region__provider", "gpu_model").order_by("slug")
    )
    available = _available_gpu_hours(pools, months, end) if pools else {}
    rows = []
    for month in months:
        for pool in pools:
            sold_hours = sold.get((pool.pk, month), ZERO)
            available_hours = available[pool.pk, month]
            if not sold_hours and not available_hours:
                continue
            rows.append(
                [
                    f"{month:%Y-%m}",
                    pool.region.provider.name,
                    pool.slug,
                    pool.gpu_model.name,
                    pool.tier,
                    _plain(sold_hours),
                    _plain(available_hours),
                    _percent(sold_hours, available_hours),
                ]
            )
    return Report(
        slug="utilisation",
        title="Utilisation per pool and month (sold GPU-hours / available GPU-hours)",
        columns=[
            "month",
            "provider",
            "pool",
            "gpu_model",
            "tier",
            "sold_gpu_hours",
            "available_gpu_hours",
            "utilisation_percent",
        ],
        rows=rows,
    )


def backup_share_report(*, start: datetime, end: datetime) -> Report:
    """Per month and currency: usage revenue, the part earned on backup-tier pools, and its
    share."""
    rows = []
    aggregated = (
        UsageRecord.objects.filter(hour__gte=start, hour__lt=end)
        .annotate(month=TruncMonth("hour", tzinfo=UTC))
        .values("month", "currency")
        .annotate(
            revenue=Sum("amount"),
            backup=Sum("amount", filter=Q(pool__tier=CapacityPool.Tier.BACKUP)),
        )
        .order_by("month", "currency")
    )
    for row in aggregated:
        revenue = round_money(row["revenue"], row["currency"])
        backup = round_money(row["backup"] or ZERO, row["currency"])
        rows.append(
            [f"{row['month']:%Y-%m}", row["currency"], revenue, backup, _percent(backup, revenue)]
        )
    return Report(
        slug="backup-share",
        title="Share of revenue from backup capacity",
        columns=["month", "currency", "revenue", "backup_revenue", "backup_share_percent"],
        rows=rows,
    )


REPORTS = {
    "margin": margin_report,
    "utilisation": utilisation_report,
    "backup-share": backup_share_report,
}


def reports_build(*, start: datetime, end: datetime) -> list[Report]:
    return [build(start=start, end=end) for build in REPORTS.values()]
