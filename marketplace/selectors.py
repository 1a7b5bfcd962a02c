"""Reads of the demand side: availability search, earliest windows, reservations, credit."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.core.exceptions import FieldDoesNotExist
from django.db import connection
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

from capacity.models import CapacityPool, GpuModel, Incident, Provider, Region
from capacity.selectors import (
    earliest_free_starts,
    free_by_hour_of_pools,
    incident_during,
    incidents_by_pool,
    ledger_spans,
    pools_with_room_in_ledger,
    set_based_search_supported,
    steady_capacity,
)
from core.db import Columns
from core.timeutils import HOUR, hours_between
from marketplace import pricing
from marketplace.models import (
    ApiKey,
    Displacement,
    IdempotencyRecord,
    Placement,
    PoolPrice,
    Reservation,
    Tenant,
)


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


_POOL_COLUMNS = Columns(CapacityPool, "p")
_REGION_COLUMNS = Columns(Region, "r")
_PROVIDER_COLUMNS = Columns(Provider, "v")
_GPU_MODEL_COLUMNS = Columns(GpuModel, "g")
_PRICE_COLUMNS = Columns(PoolPrice, "b", only=["price_per_gpu_hour"])


def bookable_pools(criteria: PoolFilter, *, currency: str) -> list[CapacityPool]:
    """``candidate_pools`` for a booking, in one plain statement (a booking reads them every
    time): the same pools, by slug, with their region, provider and GPU model attached and
    their list price in ``currency`` as ``list_price`` (with ``list_price_currency``)."""
    where = ["g.slug = %s", "p.status = %s"]
    params: list[Any] = [currency, criteria.gpu_model, CapacityPool.Status.ACTIVE.value]
    for column, value in (
        ("r.code", criteria.region),
        ("v.slug", criteria.provider),
        ("p.tier", criteria.tier),
        ("p.slug", criteria.pool),
    ):
        if value:
            where.append(f"{column} = %s")
            params.append(value)
    sql = (
        f"SELECT {_POOL_COLUMNS.columns}, {_REGION_COLUMNS.columns}, "  # noqa: S608
        f"{_PROVIDER_COLUMNS.columns}, {_GPU_MODEL_COLUMNS.columns}, {_PRICE_COLUMNS.columns} "
        f"FROM {CapacityPool._meta.db_table} p "
        f"JOIN {Region._meta.db_table} r ON r.id = p.region_id "
        f"JOIN {Provider._meta.db_table} v ON v.id = r.provider_id "
        f"JOIN {GpuModel._meta.db_table} g ON g.id = p.gpu_model_id "
        f"JOIN {PoolPrice._meta.db_table} b ON b.pool_id = p.id AND b.currency = %s "
        f"WHERE {' AND '.join(where)} ORDER BY p.slug"
    )
    pools = []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    for row in rows:
        pool, rest = _POOL_COLUMNS.take(row)
        region, rest = _REGION_COLUMNS.take(rest)
        region.provider, rest = _PROVIDER_COLUMNS.take(rest)
        pool.gpu_model, rest = _GPU_MODEL_COLUMNS.take(rest)
        pool.region = region
        # where the ORM puts annotations (candidate_pools annotates these two)
        pool.__dict__["list_price"] = _PRICE_COLUMNS.take(rest)[0].price_per_gpu_hour
        pool.__dict__["list_price_currency"] = currency
        pools.append(pool)
    return pools


def _pool_order(pool: CapacityPool, unit_price: Decimal) -> tuple:
    # Cheapest first; at equal price primary capacity before backup; then the slug for a
    # stable order.
    return (unit_price, pool.tier != CapacityPool.Tier.PRIMARY, pool.slug)


def _offer_order(offer: Window) -> tuple:
    return _pool_order(offer.pool, offer.unit_price)


def _priced_pools(
    *,
    tenant: Tenant,
    criteria: PoolFilter,
    gpu_count: int,
    hours: int,
    max_unit_price: Decimal | None,
    span: tuple[datetime, datetime],
) -> tuple[list[tuple[CapacityPool, Decimal]], dict[int, list[Incident]]]:
    """The candidate pools that sell ``gpu_count`` GPUs in their booking step, with the unit
    price the tenant pays for ``hours`` hours, within ``max_unit_price``; and the incidents of
    those pools over ``span`` (``incidents_by_pool``). One query for the pools, their list
    prices and whether an incident touches the span; one for the incidents when one does (and
    one for the commitment discount).

    The pools come without their region and GPU model (``with_catalogue`` adds them to those
    offered) and without their timestamps: a search may read a thousand pools to offer five."""
    commitment = pricing.commitment_percent(hours)
    pools = (
        candidate_pools(criteria, currency=tenant.currency)
        .select_related(None)
        .defer("created_at", "updated_at")
        .annotate(incident_during=incident_during(*span))
    )
    # The unit price depends on the pool only through its list price: one computation each.
    unit_by_list_price: dict[Decimal, Decimal] = {}
    priced: list[tuple[CapacityPool, Decimal]] = []
    with_incidents = []
    for pool in pools:
        if gpu_count % pool.booking_step:
            continue
        list_price = pricing.list_price(pool=pool, currency=tenant.currency)
        unit = unit_by_list_price.get(list_price) if list_price is not None else None
        if unit is None:
            unit = pricing.unit_price(pool=pool, tenant=tenant, hours=hours, commitment=commitment)
            if list_price is not None:
                unit_by_list_price[list_price] = unit
        if max_unit_price is not None and unit > max_unit_price:
            continue
        priced.append((pool, unit))
        if pool.incident_during:
            with_incidents.append(pool.pk)
    return priced, incidents_by_pool(with_incidents, *span)


def _with_catalogue(windows: list[Window]) -> list[Window]:
    """``windows``, their pools given their region (with its provider) and GPU model from one
    query each: the offers' pools share a few of them."""
    pools = [window.pool for window in windows]
    regions = Region.objects.select_related("provider").in_bulk({p.region_id for p in pools})
    gpu_models = GpuModel.objects.in_bulk({p.gpu_model_id for p in pools})
    for pool in pools:
        pool.region = regions[pool.region_id]
        pool.gpu_model = gpu_models[pool.gpu_model_id]
    return windows


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
    the whole of [start, end), cheapest first (primary before backup at equal price).

    A fixed number of queries whatever the number of pools: the pools (with whether an
    incident touches the window), one grouped read of the ledger over the window (capacity −
    booked of the hours with a row; the pool's sellable GPUs for the others) and the pools'
    regions and GPU models. Only pools whose capacity varies inside the window (an incident,
    the contract's edge) have their hours read one by one, all in one more query."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)  # elapsed hours, not wall clock
    hours = hours_between(start, end)
    currency = tenant.currency  # every offer is priced, and compared, in the tenant's currency
    priced, incidents = _priced_pools(
        tenant=tenant,
        criteria=criteria,
        gpu_count=gpu_count,
        hours=hours,
        max_unit_price=max_unit_price,
        span=(start, end),
    )
    steady = {
        pool.pk: steady_capacity(pool, start, end, incidents.get(pool.pk, [])) for pool, _ in priced
    }
    spans = ledger_spans(
        [pk for pk, capacity in steady.items() if capacity is not None], start, end
    )
    varying = free_by_hour_of_pools(
        [pool for pool, _ in priced if steady[pool.pk] is None], start, end, incidents=incidents
    )
    totals: dict[Decimal, Decimal] = {}  # the total depends on the offer only by its unit price
    offers = []
    for pool, unit in priced:
        capacity = steady[pool.pk]
        if capacity is not None:
            available = spans[pool.pk].free_gpus(hours=hours, steady_capacity=capacity)
        else:
            available = min(varying[pool.pk], default=0)
        if available < gpu_count:
            continue
        if unit not in totals:
            totals[unit] = pricing.total_price(
                unit=unit, gpus=gpu_count, hours=hours, currency=currency
            )
        offers.append(
            Window(
                start=start,
                end=end,
                pool=pool,
                available_gpus=available,
                unit_price=unit,
                currency=currency,
                total_price=totals[unit],
            )
        )
    return _with_catalogue(sorted(offers, key=_offer_order))


def _earliest_in_hours(free: list[int], *, gpu_count: int, duration_hours: int) -> int | None:
    """The first index of ``free`` (GPUs free per hour) from which ``gpu_count`` GPUs are free
    for ``duration_hours`` hours, or None."""
    run = 0  # consecutive hours with enough GPUs, ending at the hour looked at
    for i, value in enumerate(free):
        run = run + 1 if value >= gpu_count else 0
        if run >= duration_hours:
            return i + 1 - duration_hours
    return None


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
    first, then cheapest, at most ``limit``.

    On PostgreSQL, the pools whose capacity is the same all through the span (the usual case)
    are searched in one gaps-and-islands statement over the ledger that stops at ``not_after``
    and returns at most ``limit`` windows; the others (an incident, the contract's edge, too
    few GPUs but in ledger rows) have their hours read together and scanned here."""
    not_before, not_after = not_before.astimezone(UTC), not_after.astimezone(UTC)
    duration = timedelta(hours=duration_hours)
    span_end = not_before + hours_between(not_before, not_after) * HOUR
    currency = tenant.currency  # every window is priced, and compared, in the tenant's currency
    if span_end - not_before < duration or span_end == not_before:
        return []
    priced, incidents = _priced_pools(
        tenant=tenant,
        criteria=criteria,
        gpu_count=gpu_count,
        hours=duration_hours,
        max_unit_price=max_unit_price,
        span=(not_before, span_end),
    )
    unit_prices = {pool.pk: unit for pool, unit in priced}
    steady = {
        pool.pk: steady_capacity(pool, not_before, span_end, incidents.get(pool.pk, []))
        for pool, _ in priced
    }
    set_based = set_based_search_supported(not_before)
    in_one_statement = [
        pool
        for pool, _ in priced
        if set_based and (capacity := steady[pool.pk]) is not None and capacity >= gpu_count
    ]
    # A steady capacity below the GPUs asked for leaves room only in ledger rows (hours whose
    # capacity was set before a change): most such pools have none, which one query tells.
    short = [pk for pk, capacity in steady.items() if capacity is not None and capacity < gpu_count]
    without_room = set(short) - pools_with_room_in_ledger(
        short, gpus=gpu_count, start=not_before, end=span_end
    )
    skipped = without_room | {pool.pk for pool in in_one_statement}
    hour_by_hour = [pool for pool, _ in priced if pool.pk not in skipped]

    def window(pool: CapacityPool, start: datetime, available: int) -> Window:
        unit = unit_prices[pool.pk]
        return Window(
            pool=pool,
            start=start,
            end=start + duration,
            available_gpus=available,
            unit_price=unit,
            total_price=pricing.total_price(
                unit=unit, gpus=gpu_count, hours=duration_hours, currency=currency
            ),
            currency=currency,
        )

    windows = []
    in_one_statement.sort(key=lambda pool: _pool_order(pool, unit_prices[pool.pk]))
    by_id = {pool.pk: pool for pool in in_one_statement}
    for pool_id, start, span in earliest_free_starts(
        [pool.pk for pool in in_one_statement],
        gpus=gpu_count,
        duration_hours=duration_hours,
        start=not_before,
        end=span_end,
        limit=limit if limit >= 0 else None,
    ):
        capacity = steady[pool_id]
        assert capacity is not None
        available = span.free_gpus(hours=duration_hours, steady_capacity=capacity)
        windows.append(window(by_id[pool_id], start, available))
    free_by_pool = free_by_hour_of_pools(hour_by_hour, not_before, span_end, incidents=incidents)
    for pool in hour_by_hour:
        free = free_by_pool[pool.pk]
        first = _earliest_in_hours(free, gpu_count=gpu_count, duration_hours=duration_hours)
        if first is not None:
            available = min(free[first : first + duration_hours])
            windows.append(window(pool, not_before + first * HOUR, available))
    windows.sort(key=lambda w: (w.start, *_offer_order(w)))
    return _with_catalogue(windows[:limit])


_KEY_COLUMNS = Columns(ApiKey, "k")
_TENANT_COLUMNS = Columns(Tenant, "t")


def api_key_by_digest(digest: str) -> ApiKey | None:
    """The API key with this digest, its tenant attached, or None. Every authenticated request
    asks this (with no cache, so a revocation takes effect at once): one plain statement by
    unique key, cheaper than building the joined ORM query each time."""
    sql = (
        f"SELECT {_KEY_COLUMNS.columns}, {_TENANT_COLUMNS.columns} "  # noqa: S608
        f"FROM {ApiKey._meta.db_table} k JOIN {Tenant._meta.db_table} t ON t.id = k.tenant_id "
        "WHERE k.digest = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [digest])
        row = cursor.fetchone()
    if row is None:
        return None
    key, rest = _KEY_COLUMNS.take(row)
    key.tenant = _TENANT_COLUMNS.take(rest)[0]
    return key


def tenant_lock(tenant_id: int) -> Tenant | None:
    """The tenant's row, locked until the transaction ends (where the database locks rows), or
    None. Every booking starts here: one plain statement, not an ORM query built each time."""
    sql = f"SELECT {_TENANT_COLUMNS.columns} FROM {Tenant._meta.db_table} t WHERE t.id = %s"  # noqa: S608
    if connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    with connection.cursor() as cursor:
        cursor.execute(sql, [tenant_id])
        row = cursor.fetchone()
    return _TENANT_COLUMNS.take(row)[0] if row is not None else None


_RECORD_COLUMNS = Columns(IdempotencyRecord, "i")


def idempotency_record(*, tenant_id: int, scope: str, key: str) -> IdempotencyRecord | None:
    """What an Idempotency-Key of the tenant remembers for ``scope``, or None (unique key; a
    plain statement, as every write under a key asks it)."""
    sql = (
        f"SELECT {_RECORD_COLUMNS.columns} FROM {IdempotencyRecord._meta.db_table} i "  # noqa: S608
        "WHERE i.tenant_id = %s AND i.scope = %s AND i.key = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [tenant_id, scope, key])
        row = cursor.fetchone()
    return _RECORD_COLUMNS.take(row)[0] if row is not None else None


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


# ``peak_gpus`` on PostgreSQL: the sweep over the live reservations' starts and ends done by the
# database (a running sum per moment), so a tenant with thousands of reservations in the window
# costs one row back, not thousands.
_PEAK_GPUS = """
WITH live AS (
    SELECT start, "end", gpu_count FROM {table}
    WHERE tenant_id = %(tenant)s AND status = ANY(%(statuses)s)
      AND start < %(end)s AND "end" > %(start)s
      AND (%(exclude)s::uuid IS NULL OR id <> %(exclude)s::uuid)
), changes AS (
    SELECT GREATEST(start, %(start)s) AS moment, gpu_count AS delta FROM live
    UNION ALL
    SELECT LEAST("end", %(end)s), -gpu_count FROM live
), levels AS (
    SELECT sum(sum(delta)) OVER (ORDER BY moment) AS level FROM changes GROUP BY moment
)
SELECT GREATEST(COALESCE(max(level), 0), 0) FROM levels
"""


def peak_of(spans: Iterable[tuple[datetime, datetime, int]], start: datetime, end: datetime) -> int:
    """The most GPUs held at once within [start, end) by ``(start, end, gpus)`` spans."""
    changes: dict[datetime, int] = {}
    for span_start, span_end, gpus in spans:
        changes[max(span_start, start)] = changes.get(max(span_start, start), 0) + gpus
        changes[min(span_end, end)] = changes.get(min(span_end, end), 0) - gpus
    peak = level = 0
    for moment in sorted(changes):
        level += changes[moment]
        peak = max(peak, level)
    return peak


def peak_gpus(
    *, tenant: Tenant, start: datetime, end: datetime, exclude: Reservation | None = None
) -> int:
    """The most GPUs the tenant holds in any hour of [start, end) (live reservations)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _PEAK_GPUS.format(table=Reservation._meta.db_table),
                {
                    "tenant": tenant.pk,
                    "statuses": list(Reservation.LIVE_STATUSES),
                    "start": start,
                    "end": end,
                    "exclude": exclude.pk if exclude is not None else None,
                },
            )
            return int(cursor.fetchone()[0])
    reservations = Reservation.objects.filter(
        tenant=tenant, status__in=Reservation.LIVE_STATUSES, start__lt=end, end__gt=start
    )
    if exclude is not None:
        reservations = reservations.exclude(pk=exclude.pk)
    return peak_of(reservations.values_list("start", "end", "gpu_count"), start, end)


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
