"""Reads of the capacity catalogue and of free capacity over time."""

from datetime import UTC, datetime

from django.db.models import QuerySet

from capacity.models import CapacityPool, MaintenanceWindow, PoolHour
from core.timeutils import HOUR, floor_hour, hour_range, utcnow


def pool_list() -> QuerySet[CapacityPool]:
    return CapacityPool.objects.select_related("region__provider", "gpu_model")


def capacity_for_hours(
    pool: CapacityPool, hours: list[datetime], extra_windows: list[MaintenanceWindow] = ()
) -> dict[datetime, int]:
    """Sellable GPUs of ``pool`` in each of ``hours`` (UTC hour starts), before any booking.

    Zero outside the contract window; the hold-back and maintenance windows are subtracted
    (never below zero)."""
    if not hours:
        return {}
    windows = [
        *MaintenanceWindow.objects.filter(
            pool=pool, start__lt=max(hours) + HOUR, end__gt=min(hours)
        ),
        *extra_windows,
    ]
    sellable = pool.sellable_gpus
    result = {}
    for hour in hours:
        if hour < pool.available_from or hour + HOUR > pool.available_until:
            result[hour] = 0
            continue
        out = sum(w.gpus for w in windows if w.start <= hour < w.end)
        result[hour] = max(0, sellable - out)
    return result


def free_by_hour(pool: CapacityPool, start: datetime, end: datetime) -> list[int]:
    """Free GPUs of ``pool`` in each hour of [start, end): the ledger where it has a row,
    the computed capacity where nobody has booked yet."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)  # UTC hours, not wall-clock ones
    ledger = {
        hour: capacity - booked
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


def capacity_shortfall(
    pool: CapacityPool,
    new_window: MaintenanceWindow | None = None,
    *,
    now: datetime | None = None,
) -> PoolHour | None:
    """The first ledger hour, from the hour in progress at ``now`` on, whose booked GPUs would
    exceed the capacity that ``pool`` (possibly edited in memory, not yet saved) with
    ``new_window`` would give, or None when every booking still fits. Earlier hours are
    history, which a capacity change leaves as it is."""
    rows = PoolHour.objects.filter(
        pool_id=pool.pk, booked__gt=0, hour__gte=ledger_open_from(now)
    ).order_by("hour")
    if new_window is not None:
        rows = rows.filter(hour__gte=new_window.start, hour__lt=new_window.end)
    rows = list(rows)
    extra = [new_window] if new_window is not None else []
    capacity = capacity_for_hours(pool, [row.hour for row in rows], extra)
    for row in rows:
        if capacity[row.hour] < row.booked:
            row.capacity = capacity[row.hour]
            return row
    return None
