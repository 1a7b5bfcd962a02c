"""Reads of the capacity catalogue and of free capacity over time."""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from django.core.exceptions import FieldDoesNotExist
from django.db import connection
from django.db.models import (
    CharField,
    Count,
    DecimalField,
    Exists,
    F,
    Min,
    Model,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Greatest

from capacity.models import CapacityPool, GpuModel, Incident, PoolHour, Provider, Region
from core.db import Columns, from_db
from core.timeutils import HOUR, floor_hour, hour_range, hours_between, is_whole_hour, utcnow

# --- the catalogue as tenants read it ----------------------------------------------------------
# A catalogue pool carries, besides its own fields: ``provider_slug``, ``region_code``,
# ``region_country``, ``gpu_model_slug``; its list price ``price_per_gpu_hour`` in
# ``price_currency`` (the caller's currency, or the pool's own for None), null where the price
# book has none. The price book is the marketplace's (``PoolPrice``, the pools' ``prices``); it
# is reached through that reverse relation, so capacity imports nothing of the marketplace.


def _price_book() -> type[Model] | None:
    try:
        return CapacityPool._meta.get_field("prices").related_model
    except FieldDoesNotExist:  # the marketplace is not installed: no prices to show
        return None


def pool_catalogue(currency: str | None) -> QuerySet[CapacityPool]:
    """Every pool as the catalogue shows it (see above), for lists with filters and ordering."""
    wanted = Value(currency, output_field=CharField()) if currency else F("currency")
    book = _price_book()
    price: Value | Subquery
    if book is None:
        price = Value(None, output_field=DecimalField(max_digits=12, decimal_places=4))
    else:
        price = Subquery(
            book._default_manager.filter(
                pool=OuterRef("pk"), currency=currency or OuterRef("currency")
            ).values("price_per_gpu_hour")[:1]
        )
    return CapacityPool.objects.annotate(
        provider_slug=F("region__provider__slug"),
        region_code=F("region__code"),
        region_country=F("region__country"),
        gpu_model_slug=F("gpu_model__slug"),
        price_per_gpu_hour=price,
        price_currency=wanted,
    )


def pool_catalogue_entry(slug: str, currency: str | None) -> CapacityPool | None:
    """One pool of ``pool_catalogue`` by its slug, or None. The hottest read of the API (a
    pool's page): one plain statement, without building the ORM query each time."""
    book = _price_book()
    price = (
        f"(SELECT b.price_per_gpu_hour FROM {book._meta.db_table} b "  # noqa: S608
        "WHERE b.pool_id = p.id AND b.currency = COALESCE(%s, p.currency))"
        if book is not None
        else "NULL"
    )
    sql = (
        f"SELECT {_POOL_COLUMNS.columns}, pv.slug, r.code, r.country, g.slug, "  # noqa: S608
        f"{price}, COALESCE(%s, p.currency) "
        f"FROM {CapacityPool._meta.db_table} p "
        f"JOIN {Region._meta.db_table} r ON r.id = p.region_id "
        f"JOIN {Provider._meta.db_table} pv ON pv.id = r.provider_id "
        f"JOIN {GpuModel._meta.db_table} g ON g.id = p.gpu_model_id "
        "WHERE p.slug = %s"
    )
    params = ([currency] if book is not None else []) + [currency, slug]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    pool, names = _POOL_COLUMNS.take(row)
    # where the ORM puts annotations (pool_catalogue annotates these)
    pool.__dict__.update(zip(_CATALOGUE_NAMES, names, strict=True))
    if book is not None:
        price = from_db(book, "price_per_gpu_hour", pool.__dict__["price_per_gpu_hour"])
        pool.__dict__["price_per_gpu_hour"] = price
    return pool


_POOL_COLUMNS = Columns(CapacityPool, "p")
_CATALOGUE_NAMES = (
    "provider_slug",
    "region_code",
    "region_country",
    "gpu_model_slug",
    "price_per_gpu_hour",
    "price_currency",
)


def incidents_overlapping(pool_id: int, start: datetime, end: datetime) -> QuerySet[Incident]:
    """The pool's incidents that cover some hour of [start, end) (open ones run on)."""
    return Incident.objects.filter(pool_id=pool_id, start__lt=end).filter(
        Q(end__isnull=True) | Q(end__gt=start)
    )


def incidents_by_pool(
    pool_ids: Collection[int], start: datetime, end: datetime
) -> dict[int, list[Incident]]:
    """The incidents of each of the pools that cover some hour of [start, end), in one query
    (pools without any are left out)."""
    found: dict[int, list[Incident]] = {}
    if not pool_ids:
        return found
    incidents = Incident.objects.filter(pool_id__in=pool_ids, start__lt=end).filter(
        Q(end__isnull=True) | Q(end__gt=start)
    )
    for incident in incidents.order_by():
        found.setdefault(incident.pool_id, []).append(incident)
    return found


def incident_during(start: datetime, end: datetime) -> Exists:
    """For a ``CapacityPool`` queryset: whether the pool has an incident covering some hour of
    [start, end) (the rows ``incidents_by_pool`` reads)."""
    return Exists(
        Incident.objects.filter(pool=OuterRef("pk"), start__lt=end).filter(
            Q(end__isnull=True) | Q(end__gt=start)
        )
    )


def capacity_for_hours(
    pool: CapacityPool, hours: list[datetime], *, incidents: Sequence[Incident] | None = None
) -> dict[datetime, int]:
    """Sellable GPUs of ``pool`` in each of ``hours`` (UTC hour starts), before any booking.

    Zero outside the contract window; the hold-back and the incidents covering the hour are
    subtracted (never below zero). ``incidents``: the pool's incidents over those hours when
    the caller has read them already (at least all of them that cover one of the hours)."""
    if not hours:
        return {}
    if incidents is None:
        incidents = list(incidents_overlapping(pool.pk, min(hours), max(hours) + HOUR))
    sellable = pool.sellable_gpus
    result = {}
    for hour in hours:
        if hour < pool.available_from or hour + HOUR > pool.available_until:
            result[hour] = 0
            continue
        out = sum(incident.gpus for incident in incidents if incident.covers(hour))
        result[hour] = max(0, sellable - out)
    return result


def steady_capacity(
    pool: CapacityPool, start: datetime, end: datetime, incidents: Sequence[Incident]
) -> int | None:
    """The computed capacity (``capacity_for_hours``) of ``pool`` when it is the same in every
    hour of [start, end): the contract window covers the span and none of ``incidents`` (the
    pool's, over the span) touches it. None when it may vary from hour to hour."""
    if incidents or start < pool.available_from or end > pool.available_until:
        return None
    return max(0, pool.sellable_gpus)


def _free_gpus_expression() -> Greatest:
    return Greatest(F("capacity") - F("booked"), Value(0))


def free_by_hour_of_pools(
    pools: Sequence[CapacityPool],
    start: datetime,
    end: datetime,
    *,
    incidents: dict[int, list[Incident]] | None = None,
) -> dict[int, list[int]]:
    """``free_by_hour`` of each of ``pools`` (by pool id) over the same span, in one ledger
    query and at most one incident query. ``incidents``: ``incidents_by_pool`` over the span
    when the caller has it already."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)  # UTC hours, not wall-clock ones
    hours = hour_range(start, end)
    ledger: dict[int, dict[datetime, int]] = {pool.pk: {} for pool in pools}
    if pools and hours:
        rows = (
            PoolHour.objects.filter(pool_id__in=list(ledger), hour__gte=start, hour__lt=end)
            .annotate(free_gpus=_free_gpus_expression())
            .order_by()
            .values_list("pool_id", "hour", "free_gpus")
        )
        for pool_id, hour, free in rows:
            ledger[pool_id][hour] = free
    incomplete = [pool for pool in pools if len(ledger[pool.pk]) < len(hours)]
    if incidents is None and incomplete:
        incidents = incidents_by_pool([pool.pk for pool in incomplete], start, end)
    result = {}
    for pool in pools:
        booked = ledger[pool.pk]
        computed = (
            capacity_for_hours(pool, hours, incidents=(incidents or {}).get(pool.pk, []))
            if len(booked) < len(hours)
            else {}
        )
        result[pool.pk] = [booked[hour] if hour in booked else computed[hour] for hour in hours]
    return result


def free_by_hour(pool: CapacityPool, start: datetime, end: datetime) -> list[int]:
    """Free GPUs of ``pool`` in each hour of [start, end): the ledger where it has a row,
    the computed capacity where nobody has booked yet."""
    return free_by_hour_of_pools([pool], start, end)[pool.pk]


@dataclass(frozen=True)
class LedgerSpan:
    """What the ledger holds of one pool over a span: how many of its hours have a row, and
    the fewest free GPUs (capacity − booked, never below zero) among those rows."""

    rows: int
    least_free: int

    def free_gpus(self, *, hours: int, steady_capacity: int) -> int:
        """The most GPUs free in every hour of the ``hours``-hour span, for a pool whose
        computed capacity is ``steady_capacity`` in each hour without a row."""
        free = [self.least_free] if self.rows else []
        if self.rows < hours:
            free.append(steady_capacity)
        return min(free) if free else 0


# ``ledger_spans`` on PostgreSQL: the pool ids as one array parameter (a search passes up to
# thousands; an IN list of as many placeholders costs more to build than to run).
_LEDGER_SPANS = """
SELECT pool_id, count(hour), min(GREATEST(capacity - booked, 0))
FROM {ledger}
WHERE pool_id = ANY(%(pool_ids)s::bigint[]) AND hour >= %(start)s AND hour < %(end)s
GROUP BY pool_id
"""


def ledger_spans(
    pool_ids: Collection[int], start: datetime, end: datetime
) -> dict[int, LedgerSpan]:
    """``LedgerSpan`` of each of the pools over [start, end), in one grouped query over the
    (pool, hour) index; a pool without rows in the span gets ``LedgerSpan(0, 0)``."""
    spans = dict.fromkeys(pool_ids, LedgerSpan(rows=0, least_free=0))
    if not spans or start >= end:
        return spans
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _LEDGER_SPANS.format(ledger=PoolHour._meta.db_table),
                {"pool_ids": list(spans), "start": start, "end": end},
            )
            rows = cursor.fetchall()
    else:
        rows = (
            PoolHour.objects.filter(pool_id__in=list(spans), hour__gte=start, hour__lt=end)
            .order_by()
            .values("pool_id")
            .annotate(rows=Count("hour"), least_free=Min(_free_gpus_expression()))
            .values_list("pool_id", "rows", "least_free")
        )
    for pool_id, count, least_free in rows:
        spans[pool_id] = LedgerSpan(rows=count, least_free=least_free)
    return spans


def free_gpus(pool: CapacityPool, start: datetime, end: datetime) -> int:
    """The most GPUs that can be booked on ``pool`` for the whole of [start, end)."""
    free = free_by_hour(pool, start, end)
    return min(free) if free else 0


def set_based_search_supported(start: datetime) -> bool:
    """Whether ``earliest_free_starts`` can answer a search from ``start``: on PostgreSQL
    (its SQL is PostgreSQL's) and from a whole UTC hour (the ledger's grid)."""
    return connection.vendor == "postgresql" and is_whole_hour(start)


# Per pool, the first gap long enough between the ledger hours that lack the GPUs ("blocked"):
# lag() over the pool's blocked hours in (pool, hour) index order, so the scan stops at the
# first gap found; when there is none, the gap after the last blocked hour (the whole span when
# no hour is blocked), read backwards from the span's end. The first ``limit`` (by start, then
# the caller's rank) read the ledger again for the GPUs free over their window. Every read is
# an index-only range scan of poolhour_free_idx.
_EARLIEST_FREE_STARTS = """
WITH pools AS (
    SELECT id, rank FROM unnest(%(pool_ids)s::bigint[]) WITH ORDINALITY AS p(id, rank)
), gaps AS (
    SELECT pools.id AS pool_id, pools.rank, first_gap.start AS gap_start,
           CASE WHEN first_gap.start IS NULL THEN COALESCE((
               SELECT h.hour + interval '1 hour'
               FROM {ledger} h
               WHERE h.pool_id = pools.id AND h.hour >= %(start)s AND h.hour < %(end)s
                 AND GREATEST(h.capacity - h.booked, 0) < %(gpus)s
               ORDER BY h.hour DESC
               LIMIT 1
           ), %(start)s) END AS tail_start
    FROM pools
    LEFT JOIN LATERAL (
        SELECT blocked.gap_start AS start
        FROM (
            SELECT h.hour,
                   COALESCE(lag(h.hour) OVER (ORDER BY h.hour) + interval '1 hour',
                            %(start)s) AS gap_start
            FROM {ledger} h
            WHERE h.pool_id = pools.id AND h.hour >= %(start)s AND h.hour < %(end)s
              AND GREATEST(h.capacity - h.booked, 0) < %(gpus)s
        ) blocked
        WHERE blocked.hour - blocked.gap_start >= make_interval(hours => %(hours)s)
        ORDER BY blocked.hour
        LIMIT 1
    ) first_gap ON true
), chosen AS (
    SELECT pool_id, rank, COALESCE(gap_start, tail_start) AS start
    FROM gaps
    WHERE gap_start IS NOT NULL OR %(end)s - tail_start >= make_interval(hours => %(hours)s)
    ORDER BY 3, rank
    LIMIT %(limit)s
)
SELECT chosen.pool_id, chosen.start, count(h.hour),
       COALESCE(min(GREATEST(h.capacity - h.booked, 0)), 0)
FROM chosen
LEFT JOIN {ledger} h
    ON h.pool_id = chosen.pool_id AND h.hour >= chosen.start
   AND h.hour < chosen.start + make_interval(hours => %(hours)s)
GROUP BY chosen.pool_id, chosen.start, chosen.rank
ORDER BY chosen.start, chosen.rank
"""

# How far past the window's length the first pass of ``earliest_free_starts`` looks.
FIRST_LOOK = 48 * HOUR


def earliest_free_starts(
    pool_ids: Sequence[int],
    *,
    gpus: int,
    duration_hours: int,
    start: datetime,
    end: datetime,
    limit: int | None,
) -> list[tuple[int, datetime, LedgerSpan]]:
    """For pools whose computed capacity is the same in every hour of [start, end) and at
    least ``gpus`` (``steady_capacity``; so every hour without a ledger row has room), the
    earliest hour from which ``gpus`` GPUs are free for ``duration_hours`` hours inside the
    span, in one statement: (pool id, start, ``LedgerSpan`` of that window), earliest first
    and at equal start in the order of ``pool_ids``, at most ``limit`` (None: all). Only where
    ``set_based_search_supported(start)``.

    Bounded per request: a first pass looks only ``FIRST_LOOK`` past the window's length. A
    window found there is its pool's earliest in the whole span too, and comes before any
    window it did not find (which all start later); so when it finds ``limit`` of them, they
    are the answer. Only a search that finds fewer reads the whole span."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    end = start + hours_between(start, end) * HOUR  # the last whole hour of the span
    duration = duration_hours * HOUR
    if not pool_ids or end - start < duration or end == start:
        return []
    first_look = start + duration + FIRST_LOOK
    passes = [first_look, end] if limit is not None and first_look < end else [end]
    with connection.cursor() as cursor:
        for pass_end in passes:
            cursor.execute(
                _EARLIEST_FREE_STARTS.format(ledger=PoolHour._meta.db_table),
                {
                    "pool_ids": list(pool_ids),
                    "start": start,
                    "end": pass_end,
                    "gpus": gpus,
                    "hours": duration_hours,
                    "limit": limit,
                },
            )
            found = cursor.fetchall()
            if limit is not None and len(found) >= limit:
                break
    return [
        (pool_id, at.astimezone(UTC), LedgerSpan(rows=rows, least_free=least_free))
        for pool_id, at, rows, least_free in found
    ]


def pools_with_room_in_ledger(
    pool_ids: Collection[int], *, gpus: int, start: datetime, end: datetime
) -> set[int]:
    """Those of the pools with a ledger row in [start, end) where ``gpus`` GPUs are free."""
    if not pool_ids:
        return set()
    return set(
        PoolHour.objects.filter(
            pool_id__in=list(pool_ids),
            hour__gte=start.astimezone(UTC),
            hour__lt=end.astimezone(UTC),
        )
        .alias(room=_free_gpus_expression())
        .filter(room__gte=gpus)
        .order_by()
        .values_list("pool_id", flat=True)
        .distinct()
    )


def ledger_open_from(now: datetime | None = None) -> datetime:
    """The first ledger hour a capacity change still applies to: the hour in progress at
    ``now`` (default: the current time). Earlier rows are history and are never rewritten."""
    return floor_hour(utcnow() if now is None else now)


def capacity_shortfall(pool: CapacityPool, *, now: datetime | None = None) -> PoolHour | None:
    """The first ledger hour, from the hour in progress at ``now`` on, whose booked GPUs would
    exceed the capacity that ``pool`` (possibly edited in memory, not yet saved) would give,
    or None when every booking still fits. Earlier hours are history, which a pool edit
    leaves as it is."""
    rows = list(
        PoolHour.objects.filter(
            pool_id=pool.pk, booked__gt=0, hour__gte=ledger_open_from(now)
        ).order_by("hour")
    )
    capacity = capacity_for_hours(pool, [row.hour for row in rows])
    for row in rows:
        if capacity[row.hour] < row.booked:
            row.capacity = capacity[row.hour]
            return row
    return None


def excess_hours(pool_id: int, start: datetime, end: datetime | None) -> QuerySet[PoolHour]:
    """Ledger hours of the pool in [start, end) (``end`` None: from ``start`` on) where booked
    GPUs exceed capacity after an incident and still wait to be moved."""
    rows = PoolHour.objects.filter(pool_id=pool_id, excess__gt=0, hour__gte=start)
    if end is not None:
        rows = rows.filter(hour__lt=end)
    return rows.order_by("hour")
