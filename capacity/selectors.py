"""Reads of the capacity catalogue and of free capacity over time."""

from datetime import UTC, datetime

from django.db.models import Q, QuerySet

from capacity.models import CapacityPool, Incident, PoolHour
from core.timeutils import HOUR, floor_hour, hour_range, utcnow


def pool_list() -> QuerySet[CapacityPool]:
    return CapacityPool.objects.select_related("region__provider", "gpu_model")


def incidents_overlapping(pool_id: int, start: datetime, end: datetime) -> QuerySet[Incident]:
    """The pool's incidents that cover some hour of [start, end) (open ones run on)."""
    return Incident.objects.filter(pool_id=pool_id, start__lt=end).filter(
        Q(end__isnull=True) | Q(end__gt=start)
    )


def capacity_for_hours(pool: CapacityPool, hours: list[datetime]) -> dict[datetime, int]:
    """Sellable GPUs of ``pool`` in each of ``hours`` (UTC hour starts), before any booking.

    Zero outside the contract window; the hold-back and the incidents covering the hour are
    subtracted (never below zero)."""
    if not hours:
        return {}
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


def free_by_hour(pool: CapacityPool, start: datetime, end: datetime) -> list[int]:
    """Free GPUs of ``pool`` in each hour of [start, end): the ledger where it has a row,
    the computed capacity where nobody has booked yet."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)  # UTC hours, not wall-clock ones
    ledger = {
        hour: max(0, capacity - booked)
        for hour, capacity, booked in PoolHour.objects.filter(
            pool=pool, hour__gte=start, hour__lt=end
        ).values_list("hour", "capacity", "booked")
    }
    hours = hour_range(start, end)
    computed = capacity_for_hours(pool, hours) if len(ledger) < len(hours) else {}
    return [ledger[hour] if hour in ledger else computed[hour] for hour in hours]


def free_gpus(pool: CapacityPool, start: datetime, end: datetime) -> int:
    """The most GPUs that can be booked on ``pool`` for the whole of [start, end)."""
    free = free_by_hour(pool, start, end)
    return min(free) if free else 0


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
