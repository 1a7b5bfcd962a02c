"""Operator reports: revenue, provider cost and margin; utilisation; backup-tier share.

The margin report (``margin_report``; its rules are in its docstring) is in the reporting
currency (setting ``REPORTING_CURRENCY``), converted with the operators' FX table
(``billing.FxRate``), and names the rates it used. The backup-share report compares amounts of
one currency only and shows each currency on its own row, unconverted. Every figure over usage
rows is aggregated by the database (``values`` + ``annotate``); Python only merges the
aggregated rows, converts and rounds them (``core.money.round_money``)."""

import csv
import io
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TypeVar

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, Sum
from django.db.models.functions import TruncDate, TruncMonth

from billing.models import Charge, CreditNote, FxRate, Invoice, MeteringCursor, UsageRecord
from billing.services.invoicing import month_start, months_between, next_month
from capacity.models import CapacityPool, Incident, PoolCostRate
from core.money import round_money
from core.timeutils import HOUR, hour_range

ZERO = Decimal(0)


@dataclass(frozen=True)
class Report:
    slug: str
    title: str
    columns: list[str]
    rows: list[list[object]]
    # Shown above the table: the FX rates used, and amounts left unconverted for lack of one.
    notes: tuple[str, ...] = ()

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


# --- margin ------------------------------------------------------------------------------------

DAY = timedelta(days=1)
ISSUED = (Invoice.Status.FINALIZED, Invoice.Status.PAID)
# (column, what the missing-rate note calls it) of each money figure of the margin report.
FIGURES = [
    ("invoiced_revenue", "invoiced revenue"),
    ("credit_notes", "credit notes"),
    ("sold_cost", "provider cost of sold hours"),
    ("idle_cost", "provider cost of idle hours"),
    ("not_yet_invoiced", "revenue not yet invoiced"),
]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _month_of(day: date) -> datetime:
    return _midnight(day.replace(day=1))


class _Fx:
    """The operators' FX table (``billing.FxRate``): an amount of ``currency`` dated ``day``
    converts at the rate with the latest ``effective_from`` on or before ``day``. The reporting
    currency converts at 1 (a row for it is ignored)."""

    def __init__(self, target: str) -> None:
        self.target = target
        table: dict[str, list[FxRate]] = defaultdict(list)
        for rate in FxRate.objects.exclude(currency=target).order_by("currency", "effective_from"):
            table[rate.currency].append(rate)
        self._rates = dict(table)
        self._days = {
            currency: [r.effective_from for r in rates] for currency, rates in table.items()
        }

    def rate(self, currency: str, day: date) -> FxRate | None:
        index = bisect_right(self._days.get(currency, []), day)
        return self._rates[currency][index - 1] if index else None


class _Figure:
    """One money figure of one month and pool, from parts in any currency, each dated. Parts
    that convert at the same rate are summed (at four decimals), converted once and rounded half
    up to the reporting currency's minor unit; the figure is the sum of those. A part that no
    rate converts is kept aside (``missing``) and leaves the figure unknown."""

    def __init__(self) -> None:
        self.parts: dict[tuple[str, FxRate | None], Decimal] = defaultdict(Decimal)
        self.missing: dict[tuple[str, date], Decimal] = defaultdict(Decimal)

    def add(self, fx: _Fx, amount: Decimal, currency: str, day: date) -> None:
        if not amount:
            return
        if currency == fx.target:
            self.parts[currency, None] += amount
        elif (rate := fx.rate(currency, day)) is not None:
            self.parts[currency, rate] += amount
        else:
            self.missing[currency, day] += amount

    def value(self, target: str) -> Decimal | None:
        if self.missing:
            return None
        return sum(
            (
                round_money(amount * (rate.rate if rate else 1), target)
                for (_, rate), amount in self.parts.items()
            ),
            round_money(ZERO, target),
        )

    @property
    def rates(self) -> set[FxRate]:
        return {rate for _, rate in self.parts if rate is not None}


@dataclass
class _Line:
    """What one pool cost and earned in one month, before conversion."""

    sold_gpu_hours: Decimal = ZERO
    idle_gpu_hours: Decimal = ZERO
    figures: dict[str, _Figure] = field(
        default_factory=lambda: {name: _Figure() for name, _ in FIGURES}
    )


Lines = defaultdict[tuple[datetime, int], _Line]  # (month, pool id) -> figures
Key = TypeVar("Key", bound=tuple)


def _allocate(amount: Decimal, weights: dict[Key, Decimal], currency: str) -> dict[Key, Decimal]:
    """``amount`` split over the keys of ``weights`` in proportion to them: each share rounded
    half up to the minor unit, and what rounding left over put on the largest weight (the first
    key on a tie), so the shares add up to ``amount`` exactly. All-zero weights split evenly."""
    if not weights:
        return {}
    if not any(weights.values()):
        weights = dict.fromkeys(weights, Decimal(1))
    whole = sum(weights.values())
    shares = {
        key: round_money(amount * weight / whole, currency) for key, weight in weights.items()
    }
    largest = sorted(weights, key=lambda key: (-weights[key], key))[0]
    shares[largest] += amount - sum(shares.values())
    return shares


def _revenue(lines: Lines, fx: _Fx, start: datetime, end: datetime) -> None:
    """Invoiced revenue and credit notes, by month of delivery and pool. An issued invoice
    (finalized or paid) counts at its net amount (subtotal - discount_total, before tax),
    split over the months and pools its usage was delivered in (and the months and pools of
    its cancellation fees) in proportion to their amounts (``_allocate``), converted at the
    invoice's issue date. A credit note counts net of tax, ``round(amount x net / total)``
    (its tax is the invoice's share), split like its invoice, converted at its own issue
    date. Void invoices count nothing. Then what is not on an issued invoice yet (a draft, or
    no invoice): usage and fees at their amounts, converted at the delivery date."""
    months = set(months_between(start, end))
    in_range = {"hour__gte": start, "hour__lt": end}
    fees_in_range = {"incurred_at__gte": start, "incurred_at__lt": end}
    # Usage of month M is billed on the invoice of M or, late, of a later month: never earlier.
    invoices = {
        invoice.pk: invoice
        for invoice in Invoice.objects.filter(
            status__in=ISSUED, period_start__gte=month_start(start)
        ).filter(
            Exists(UsageRecord.objects.filter(invoice=OuterRef("pk"), **in_range))
            | Exists(Charge.objects.filter(invoice=OuterRef("pk"), **fees_in_range))
        )
    }
    weights: dict[int, dict[tuple[datetime, int], Decimal]] = defaultdict(
        lambda: defaultdict(Decimal)
    )
    usage = (
        UsageRecord.objects.filter(invoice_id__in=list(invoices))
        .annotate(month=TruncMonth("hour", tzinfo=UTC))
        .values_list("invoice_id", "month", "pool_id")
        .annotate(weight=Sum("amount"))
        .order_by()
    )
    fees = (
        Charge.objects.filter(invoice_id__in=list(invoices))
        .annotate(month=TruncMonth("incurred_at", tzinfo=UTC))
        .values_list("invoice_id", "month", "reservation__pool_id")
        .annotate(weight=Sum("amount"))
        .order_by()
    )
    for invoice_id, month, pool_id, weight in [*usage, *fees]:
        weights[invoice_id][month, pool_id] += weight

    def book(figure: str, amount: Decimal, invoice: Invoice, moment: datetime | None) -> None:
        assert moment is not None  # an issued document has its date (a CHECK constraint)
        for (month, pool_id), share in _allocate(
            amount, weights[invoice.pk], invoice.currency
        ).items():
            if month in months:
                lines[month, pool_id].figures[figure].add(
                    fx, share, invoice.currency, moment.astimezone(UTC).date()
                )

    for invoice in invoices.values():
        book(
            "invoiced_revenue",
            invoice.subtotal - invoice.discount_total,
            invoice,
            invoice.finalized_at,
        )
    for note in CreditNote.objects.filter(invoice_id__in=list(invoices)).order_by("pk"):
        invoice = invoices[note.invoice_id]
        net = invoice.subtotal - invoice.discount_total
        # A credit note is never more than its invoice's total, so that total is not zero.
        before_tax = round_money(note.amount * net / invoice.total, invoice.currency)
        book("credit_notes", before_tax, invoice, note.issued_at)

    not_issued = Q(invoice__isnull=True) | Q(invoice__status=Invoice.Status.DRAFT)
    open_usage = (
        UsageRecord.objects.filter(not_issued, **in_range)
        .annotate(day=TruncDate("hour", tzinfo=UTC))
        .values_list("day", "pool_id", "currency")
        .annotate(amount=Sum("amount"))
        .order_by()
    )
    open_fees = (
        Charge.objects.filter(not_issued, **fees_in_range)
        .annotate(day=TruncDate("incurred_at", tzinfo=UTC))
        .values_list("day", "reservation__pool_id", "currency")
        .annotate(amount=Sum("amount"))
        .order_by()
    )
    for day, pool_id, currency, amount in [*open_usage, *open_fees]:
        lines[_month_of(day), pool_id].figures["not_yet_invoiced"].add(fx, amount, currency, day)


def _sold(lines: Lines, fx: _Fx, start: datetime, end: datetime) -> dict[tuple[int, date], Decimal]:
    """Sold GPU-hours and their provider cost (the usage rows' ``provider_cost``, in the pool's
    currency, converted at the delivery date) per pool and day; returns the GPU-hours."""
    sold = {}
    for day, pool_id, currency, gpu_hours, cost in (
        UsageRecord.objects.filter(hour__gte=start, hour__lt=end)
        .annotate(day=TruncDate("hour", tzinfo=UTC))
        .values_list("day", "pool_id", "pool__currency")
        .annotate(gpu_hours=Sum("gpu_hours"), cost=Sum("provider_cost"))
        .order_by()
    ):
        line = lines[_month_of(day), pool_id]
        line.sold_gpu_hours += gpu_hours
        line.figures["sold_cost"].add(fx, cost, currency, day)
        sold[pool_id, day] = gpu_hours
    return sold


def _idle(
    lines: Lines,
    fx: _Fx,
    start: datetime,
    cutoff: datetime,
    sold: dict[tuple[int, date], Decimal],
) -> None:
    """Idle GPU-hours and their cost for every pool under contract in [start, cutoff): per day
    (and, on a day the cost rate changes, per part of the day at one rate), the contracted
    GPU-hours (all the pool's GPUs, hold-back included, over the contract hours) minus the
    GPU-hours sold, never below zero, at the cost rate in force (``PoolCostRate``, latest
    ``effective_from`` at or before the hour; the pool's ``cost_per_gpu_hour`` when none is),
    in the pool's currency, converted at that day. Incidents change nothing: the provider is
    paid for the contract."""
    pools = list(CapacityPool.objects.filter(available_from__lt=cutoff, available_until__gt=start))
    rates: dict[int, list[PoolCostRate]] = defaultdict(list)
    for rate in PoolCostRate.objects.filter(pool__in=pools, effective_from__lt=cutoff).order_by(
        "pool_id", "effective_from"
    ):
        rates[rate.pool_id].append(rate)
    windows = {
        pool.pk: (max(start, pool.available_from), min(cutoff, pool.available_until))
        for pool in pools
    }
    # Days a rate changes other than at midnight: the sold GPU-hours of those by the hour.
    split = {
        (rate.pool_id, rate.effective_from.astimezone(UTC).date())
        for pool_id, pool_rates in rates.items()
        for rate in pool_rates
        if windows[pool_id][0] < rate.effective_from < windows[pool_id][1]
        and rate.effective_from.astimezone(UTC).timetz() != time(tzinfo=UTC)
    }
    hourly: dict[tuple[int, datetime], Decimal] = {}
    if split:
        days = Q()
        for pool_id, day in split:
            days |= Q(pool_id=pool_id, hour__gte=_midnight(day), hour__lt=_midnight(day) + DAY)
        hourly = {
            (pool_id, hour): gpu_hours
            for pool_id, hour, gpu_hours in UsageRecord.objects.filter(days)
            .values_list("pool_id", "hour")
            .annotate(gpu_hours=Sum("gpu_hours"))
            .order_by()
        }
    for pool in pools:
        low, high = windows[pool.pk]
        changes = [rate.effective_from for rate in rates[pool.pk]]
        day = _midnight(low.astimezone(UTC).date())
        while day < high:
            piece_start, day_end = max(low, day), min(high, day + DAY)
            inside = changes[bisect_right(changes, piece_start) : bisect_left(changes, day_end)]
            line = lines[month_start(day), pool.pk]
            for piece_end in [*inside, day_end]:
                if inside:
                    sold_hours = sum(
                        (
                            hourly.get((pool.pk, hour), ZERO)
                            for hour in hour_range(piece_start, piece_end)
                        ),
                        ZERO,
                    )
                else:
                    sold_hours = sold.get((pool.pk, day.date()), ZERO)
                idle = max(ZERO, _hours(piece_end - piece_start) * pool.total_gpus - sold_hours)
                index = bisect_right(changes, piece_start)
                cost = (
                    rates[pool.pk][index - 1].cost_per_gpu_hour if index else pool.cost_per_gpu_hour
                )
                line.idle_gpu_hours += idle
                line.figures["idle_cost"].add(fx, idle * cost, pool.currency, day.date())
                piece_start = piece_end
            day += DAY


def _add(left: Decimal | None, right: Decimal | None) -> Decimal | None:
    return None if left is None or right is None else left + right


def _span(days: set[date]) -> str:
    first, last = min(days), max(days)
    return f"{first}" if first == last else f"{first} to {last}"


def _margin_rows(
    lines: Lines, pools: dict[int, CapacityPool], target: str, by_pool: bool
) -> tuple[list[list[object]], set[FxRate], dict[str, dict[str, Decimal]], dict[str, set]]:
    """The report rows (per month and provider, or per month, provider and pool: a provider's
    row is the sum of its pools' rows), the rates used, and what no rate converted (per
    currency: per figure, and the dates)."""
    grouped: dict[tuple, dict] = {}
    used: set[FxRate] = set()
    unconverted: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    missing_days: dict[str, set[date]] = defaultdict(set)
    for (month, pool_id), line in lines.items():
        pool = pools[pool_id]
        key = (month, pool.region.provider.name) + ((pool.slug, pool.tier) if by_pool else ())
        row = grouped.setdefault(
            key,
            {
                "sold_gpu_hours": ZERO,
                "idle_gpu_hours": ZERO,
                **{name: ZERO for name, _ in FIGURES},
                "rates": set(),
                "missing": defaultdict(set),
            },
        )
        row["sold_gpu_hours"] += line.sold_gpu_hours
        row["idle_gpu_hours"] += line.idle_gpu_hours
        for name, figure in line.figures.items():
            row[name] = _add(row[name], figure.value(target))
            row["rates"] |= figure.rates
            for (currency, day), amount in figure.missing.items():
                row["missing"][currency].add(day)
                missing_days[currency].add(day)
                unconverted[currency][name] += amount
        used |= row["rates"]
    rows = []
    for key, row in sorted(grouped.items()):
        revenue = (
            None
            if row["invoiced_revenue"] is None or row["credit_notes"] is None
            else row["invoiced_revenue"] - row["credit_notes"]
        )
        cost = _add(row["sold_cost"], row["idle_cost"])
        margin = percent = None
        if revenue is not None and cost is not None:
            margin = revenue - cost
            percent = _percent(margin, revenue)
        rows.append(
            [
                f"{key[0]:%Y-%m}",
                *key[1:],
                target,
                _plain(row["sold_gpu_hours"]),
                _plain(row["idle_gpu_hours"]),
                row["invoiced_revenue"],
                row["credit_notes"],
                revenue,
                row["sold_cost"],
                row["idle_cost"],
                margin,
                percent,
                row["not_yet_invoiced"],
                "; ".join(_rate_text(rate) for rate in sorted(row["rates"], key=_rate_key)),
                "; ".join(
                    f"{currency} {_span(days)}" for currency, days in sorted(row["missing"].items())
                ),
            ]
        )
    return rows, used, unconverted, missing_days


def _rate_key(rate: FxRate) -> tuple[str, date]:
    return rate.currency, rate.effective_from


def _rate_text(rate: FxRate) -> str:
    return f"{rate.currency} {_plain(rate.rate)} from {rate.effective_from}"


def margin_report(*, start: datetime, end: datetime, by_pool: bool = False) -> Report:
    """Revenue, provider cost and margin per month of delivery and provider (and pool, with
    ``by_pool``), in the reporting currency (setting REPORTING_CURRENCY).

    Basis: the month the capacity was delivered (UTC), so a month's revenue and its costs are
    about the same GPU-hours. Invoiced revenue is taken back to those months: an issued invoice
    (finalized or paid) counts at its net amount before tax (subtotal - discount_total), split
    over the delivery months and pools of its usage and cancellation fees by their amounts; the
    rounding difference goes to the largest share, so the shares add up to the invoice. A
    credit note counts net of tax, ``round(amount x net / total)`` of its invoice, split the
    same way, in the months of the revenue it corrects, whenever it was issued (so a closed
    month changes when a credit note is issued later). Void invoices count nothing; the cost of
    their hours stays. Usage and fees not on an issued invoice yet (drafts, unbilled) are shown
    as ``not_yet_invoiced``, outside revenue and margin.

    Cost: ``sold_cost`` is the usage rows' ``provider_cost`` (the rate in force at the hour, in
    the pool's currency); ``idle_cost`` is the contracted capacity nobody used (see
    ``_idle``), counted up to where metering has run (``MeteringCursor.metered_until``): later
    hours are neither sold nor idle yet. margin = revenue - sold_cost - idle_cost;
    margin_percent = margin / revenue.

    Currency: an amount dated D (the invoice's or credit note's issue date, the delivery date
    of usage and idle hours) converts at the ``FxRate`` of its currency with the latest
    ``effective_from`` <= D; the reporting currency at 1. Amounts sharing a rate are summed
    per month and pool, converted once and rounded half up; a provider's row is the sum of its
    pools' rows. Each row lists the rates it used (``fx_rates``); the report's notes list them
    all. Missing rate: no rate is invented. A figure that includes an amount with no rate in
    force is left blank (None), as are the revenue and margin built on it; the row names the
    currency and dates (``missing_fx_rates``) and the report's notes give the unconverted
    amounts in their own currency."""
    target = settings.REPORTING_CURRENCY
    fx = _Fx(target)
    lines: Lines = defaultdict(_Line)
    _revenue(lines, fx, start, end)
    sold = _sold(lines, fx, start, end)
    metered = MeteringCursor.objects.filter(pk=1).values_list("metered_until", flat=True).first()
    cutoff = min(end, metered) if metered else start
    if cutoff > start:
        _idle(lines, fx, start, cutoff, sold)
    pools = CapacityPool.objects.select_related("region__provider").in_bulk(
        {pool_id for _, pool_id in lines}
    )
    rows, used, unconverted, missing_days = _margin_rows(lines, pools, target, by_pool)
    labels = dict(FIGURES)
    notes = [
        f"Rate used: 1 {rate.currency} = {_plain(rate.rate)} {target} from "
        f"{rate.effective_from}{f' ({rate.source})' if rate.source else ''}."
        for rate in sorted(used, key=_rate_key)
    ]
    for currency, figures in sorted(unconverted.items()):
        amounts = ", ".join(
            f"{round_money(amount, currency)} {currency} of {labels[name]}"
            for name, amount in figures.items()
        )
        notes.append(
            f"Missing rate: no {currency} rate in force on {_span(missing_days[currency])}. "
            f"{amounts} not converted; the figures that include it are left blank."
        )
    return Report(
        slug="margin-pools" if by_pool else "margin",
        title=(
            f"Revenue, provider cost and margin per provider{', pool' if by_pool else ''} "
            f"and month, in {target}"
        ),
        columns=[
            "month",
            "provider",
            *(["pool", "tier"] if by_pool else []),
            "currency",
            "sold_gpu_hours",
            "idle_gpu_hours",
            "invoiced_revenue",
            "credit_notes",
            "revenue",
            "sold_cost",
            "idle_cost",
            "margin",
            "margin_percent",
            "not_yet_invoiced",
            "fx_rates",
            "missing_fx_rates",
        ],
        rows=rows,
        notes=tuple(notes),
    )


def margin_pools_report(*, start: datetime, end: datetime) -> Report:
    """``margin_report`` per month, provider and pool."""
    return margin_report(start=start, end=end, by_pool=True)


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
    "margin-pools": margin_pools_report,
    "utilisation": utilisation_report,
    "backup-share": backup_share_report,
}


def reports_build(*, start: datetime, end: datetime) -> list[Report]:
    return [build(start=start, end=end) for build in REPORTS.values()]
