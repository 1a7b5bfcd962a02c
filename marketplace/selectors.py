"""Reads of the demand side: availability search, earliest windows, reservations, credit."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

from django.core.exceptions import FieldDoesNotExist
from django.db.models import (
    CharField,
    Count,
    DecimalField,
    F,
    FilteredRelation,
    Func,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce

from capacity.models import CapacityPool, Incident
from capacity.selectors import free_by_hour
from core.timeutils import HOUR, hours_between
from marketplace import pricing
from marketplace.models import Displacement, Placement, Reservation, Tenant


@dataclass(frozen=True)
class PoolFilter:
    gpu_model: str
    region: str | None = None
    provider: str | None = None
    tier: str | None = None
    pool: str | None = None


@dataclass(frozen=True)
class Window:
    pool: CapacityPool
    start: datetime
    end: datetime
    available_gpus: int
    unit_price: Decimal
    total_price: Decimal
    currency: str


def candidate_pools(criteria: PoolFilter, *, currency: str) -> QuerySet[CapacityPool]:
    """Active pools of the model and location asked for that are sold in ``currency`` (the
    tenant's): each carries its list price in that currency as ``list_price`` (with
    ``list_price_currency``). A pool without a price in the currency is never offered."""
    pools = (
        CapacityPool.objects.select_related("region__provider", "gpu_model")
        .filter(gpu_model__slug=criteria.gpu_model, status=CapacityPool.Status.ACTIVE)
        .annotate(price=FilteredRelation("prices", condition=Q(prices__currency=currency)))
        .filter(price__isnull=False)
        .annotate(
            list_price=F("price__price_per_gpu_hour"),
            list_price_currency=Value(currency, output_field=CharField()),
        )
    )
    if criteria.region:
        pools = pools.filter(region__code=criteria.region)
    if criteria.provider:
        pools = pools.filter(region__provider__slug=criteria.provider)
    if criteria.tier:
        pools = pools.filter(tier=criteria.tier)
    if criteria.pool:
        pools = pools.filter(slug=criteria.pool)
    return pools


def _offer_order(offer: Window) -> tuple:
    # Cheapest first; at equal price primary capacity before backup; then the slug for a
    # stable order.
    return (offer.unit_price, offer.pool.tier != CapacityPool.Tier.PRIMARY, offer.pool.slug)


def availability_search(
    *,
    tenant: Tenant,
    criteria: PoolFilter,
    gpu_count: int,
    start: datetime,
    end: datetime,
    max_unit_price: Decimal | None = None,
) -> list[Window]:
    """Every active pool sold in the tenant's currency that can take ``gpu_count`` GPUs for
    the whole of [start, end), cheapest first (primary before backup at equal price)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)  # elapsed hours, not wall clock
    hours = hours_between(start, end)
    commitment = pricing.commitment_percent(hours)
    currency = tenant.currency  # every offer is priced, and compared, in the tenant's currency
    offers = []
    for pool in candidate_pools(criteria, currency=currency):
        if gpu_count % pool.booking_step:
            continue
        free = free_by_hour(pool, start, end)
        available = min(free) if free else 0
        if available < gpu_count:
            continue
        unit = pricing.unit_price(pool=pool, tenant=tenant, hours=hours, commitment=commitment)
        if max_unit_price is not None and unit > max_unit_price:
            continue
        offers.append(
            Window(
                start=start,
                end=end,
                pool=pool,
                available_gpus=available,
                unit_price=unit,
                currency=currency,
                total_price=pricing.total_price(
                    unit=unit, gpus=gpu_count, hours=hours, currency=currency
                ),
            )
        )
    return sorted(offers, key=_offer_order)


def earliest_windows(
    *,
    tenant: Tenant,
    criteria: PoolFilter,
    gpu_count: int,
    duration_hours: int,
    not_before: datetime,
    not_after: datetime,
    limit: int = 5,
    max_unit_price: Decimal | None = None,
) -> list[Window]:
    """The earliest start on each pool sold in the tenant's currency where ``gpu_count`` GPUs
    are free for ``duration_hours`` consecutive hours inside [not_before, not_after]; earliest
    first, then cheapest, at most ``limit``."""
    not_before, not_after = not_before.astimezone(UTC), not_after.astimezone(UTC)
    duration = timedelta(hours=duration_hours)
    commitment = pricing.commitment_percent(duration_hours)
    currency = tenant.currency  # every window is priced, and compared, in the tenant's currency
    windows = []
    for pool in candidate_pools(criteria, currency=currency):
        if gpu_count % pool.booking_step:
            continue
        unit = pricing.unit_price(
            pool=pool, tenant=tenant, hours=duration_hours, commitment=commitment
        )
        if max_unit_price is not None and unit > max_unit_price:
            continue
        free = free_by_hour(pool, not_before, not_after)
        # run[i]: how many consecutive hours from hour i have enough free GPUs.
        run = [0] * (len(free) + 1)
        for i in range(len(free) - 1, -1, -1):
            run[i] = run[i + 1] + 1 if free[i] >= gpu_count else 0
        for i, length in enumerate(run[:-1]):
            if length >= duration_hours:
                start = not_before + i * HOUR
                windows.append(
                    Window(
                        pool=pool,
                        start=start,
                        end=start + duration,
                        available_gpus=min(free[i : i + duration_hours]),
                        unit_price=unit,
                        total_price=pricing.total_price(
                            unit=unit, gpus=gpu_count, hours=duration_hours, currency=currency
                        ),
                        currency=currency,
                    )
                )
                break
    windows.sort(key=lambda w: (w.start, *_offer_order(w)))
    return windows[:limit]


def reservation_prefetch() -> list[Prefetch]:
    """What the API shape of a reservation reads besides its pool: placements, interruptions."""
    return [
        Prefetch("placements", queryset=Placement.objects.select_related("pool__region")),
        Prefetch("displacements", queryset=Displacement.objects.select_related("incident")),
    ]


def reservation_list(*, tenant: Tenant) -> QuerySet[Reservation]:
    return (
        Reservation.objects.filter(tenant=tenant)
        .select_related("pool__region__provider", "pool__gpu_model")
        .prefetch_related(*reservation_prefetch())
    )


def reservation_get(*, tenant: Tenant, reservation_id: UUID | str) -> Reservation:
    """Raises Reservation.DoesNotExist for another tenant's reservation (a 404, never a 403)."""
    return reservation_list(tenant=tenant).get(pk=reservation_id)


def peak_gpus(
    *, tenant: Tenant, start: datetime, end: datetime, exclude: Reservation | None = None
) -> int:
    """The most GPUs the tenant holds in any hour of [start, end) (live reservations)."""
    reservations = Reservation.objects.filter(
        tenant=tenant, status__in=Reservation.LIVE_STATUSES, start__lt=end, end__gt=start
    )
    if exclude is not None:
        reservations = reservations.exclude(pk=exclude.pk)
    changes: dict[datetime, int] = {}
    for res_start, res_end, gpus in reservations.values_list("start", "end", "gpu_count"):
        changes[max(res_start, start)] = changes.get(max(res_start, start), 0) + gpus
        changes[min(res_end, end)] = changes.get(min(res_end, end), 0) - gpus
    peak = level = 0
    for moment in sorted(changes):
        level += changes[moment]
        peak = max(peak, level)
    return peak


# --- incidents ---------------------------------------------------------------------------------


class _SpanHours(Func):
    """Whole hours from ``start`` to ``end`` of the row (incident spans are whole UTC hours)."""

    output_field = IntegerField()

    def __init__(self) -> None:
        super().__init__(F("end"), F("start"))

    def as_sql(
        self, compiler, connection, function=None, template=None, arg_joiner=None, **extra_context
    ):
        return super().as_sql(
            compiler,
            connection,
            template="(CAST(EXTRACT(EPOCH FROM (%(expressions)s)) AS integer) / 3600)",
            arg_joiner=" - ",
            **extra_context,
        )

    def as_sqlite(self, compiler, connection, **extra_context):
        # The development setup (`make run`): datetimes are text, which julianday() reads.
        return super().as_sql(
            compiler,
            connection,
            template="CAST(ROUND((julianday(%(expressions)s)) * 24) AS integer)",
            arg_joiner=") - julianday(",
            **extra_context,
        )


def _per_incident(aggregate) -> Coalesce:
    """``aggregate`` over the displacements of the incident in the outer query (0 if none)."""
    totals = (
        Displacement.objects.filter(incident=OuterRef("pk"))
        .order_by()
        .values("incident")
        .annotate(total=aggregate)
        .values("total")
    )
    return Coalesce(Subquery(totals, output_field=IntegerField()), Value(0))


def _sla_credited():
    """The SLA credits given for the incident, summed; None while there are none. Read through
    the reverse relation billing's ``SlaCredit.incident`` declares (``sla_credits``), so the
    marketplace needs no import of billing."""
    amount = DecimalField(max_digits=14, decimal_places=2)
    try:
        Incident._meta.get_field("sla_credits")
    except FieldDoesNotExist:  # billing not installed
        return Value(None, output_field=amount)
    totals = (
        Incident.objects.filter(pk=OuterRef("pk"))
        .order_by()
        .annotate(total=Sum("sla_credits__amount"))
        .values("total")
    )
    return Subquery(totals, output_field=amount)


def incidents_with_figures(queryset: QuerySet[Incident]) -> QuerySet[Incident]:
    """Each incident with what it did: reservations it displaced, GPU-hours moved to other
    pools and lost (from its ``Displacement`` rows), and SLA credit given for it. One query
    for any number of incidents."""
    return queryset.annotate(
        affected_count=_per_incident(Count("reservation", distinct=True)),
        moved_gpu_hours=_per_incident(Sum(F("gpus_moved") * _SpanHours())),
        lost_gpu_hours=_per_incident(Sum(F("gpus_lost") * _SpanHours())),
        credited_amount=_sla_credited(),
    )
