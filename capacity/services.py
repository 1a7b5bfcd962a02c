"""Writes to the capacity catalogue and to the capacity ledger.

The ledger functions (``capacity_claim`` / ``capacity_release``) are the only code that changes
``PoolHour.booked``; marketplace calls them inside its own booking transaction."""

from datetime import UTC, datetime

from django.db import transaction
from django.db.models import F

from capacity import locks
from capacity.errors import CapacityInUse, InsufficientCapacity, InvalidWindow
from capacity.models import CapacityPool, MaintenanceWindow, PoolHour
from capacity.selectors import capacity_for_hours, ledger_open_from
from core.timeutils import hour_range, is_whole_hour

# Fields an operator may change on a pool; capacity-affecting ones trigger a ledger refresh.
POOL_CAPACITY_FIELDS = {
    "gpus_per_node",
    "node_count",
    "reserved_gpus",
    "available_from",
    "available_until",
}


def _ensure_pool_hours(pool_id: int, start: datetime, end: datetime) -> None:
    """Create the missing ledger rows of [start, end) for a pool.

    Runs under the pool row lock, which is also what maintenance and pool edits take before
    recomputing capacity: a row is therefore never created from a capacity figure that a
    concurrent change is about to make stale."""
    hours = hour_range(start, end)
    existing = PoolHour.objects.filter(pool_id=pool_id, hour__gte=start, hour__lt=end).count()
    if existing == len(hours):
        return
    pool = locks.pool_lock(pool_id)
    capacity = capacity_for_hours(pool, hours)
    PoolHour.objects.bulk_create(
        [PoolHour(pool_id=pool_id, hour=hour, capacity=capacity[hour]) for hour in hours],
        ignore_conflicts=True,
    )


def _on_utc_hour(moment: datetime) -> bool:
    # The ledger's rows are UTC hours: 09:00+05:30 is 03:30Z and would start a second,
    # misaligned grid of rows that overlaps the first without either row seeing the other.
    return moment.tzinfo is not None and is_whole_hour(moment.astimezone(UTC))


def capacity_claim(*, pool_id: int, start: datetime, end: datetime, gpus: int) -> None:
    """Add ``gpus`` to every hour of [start, end) on the pool, or raise InsufficientCapacity.

    Must run inside the caller's transaction; the ledger rows stay locked until it commits.
    Raises InvalidWindow unless both ends are whole UTC hours."""
    if not (_on_utc_hour(start) and _on_utc_hour(end)):
        raise InvalidWindow("Ledger windows start and end on whole UTC hours.")
    start, end = start.astimezone(UTC), end.astimezone(UTC)  # step through UTC hours
    _ensure_pool_hours(pool_id, start, end)
    rows = locks.pool_hours_lock([pool_id], start, end)
    free = min(row.free for row in rows)
    if free < gpus:
        raise InsufficientCapacity(
            f"Only {max(free, 0)} GPUs are free in the pool for the whole window; "
            f"{gpus} were requested.",
            extra={"available_gpus": max(free, 0)},
        )
    PoolHour.objects.filter(pk__in=[row.pk for row in rows]).update(booked=F("booked") + gpus)


def capacity_release(*, pool_id: int, start: datetime, end: datetime, gpus: int) -> None:
    """Give back ``gpus`` in every hour of [start, end). Inside the caller's transaction."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if start >= end:
        return
    rows = locks.pool_hours_lock([pool_id], start, end)
    PoolHour.objects.filter(pk__in=[row.pk for row in rows]).update(booked=F("booked") - gpus)


def _refresh_ledger(
    pool: CapacityPool,
    now: datetime | None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> None:
    """Recompute ``capacity`` of the pool's ledger rows from the hour in progress on, within
    [start, end) when given (the pool row must be locked).

    Earlier rows are history: they keep the capacity their hour had, so a pool can shrink
    below its past peak and a window reaching back in time does not rewrite them."""
    rows = PoolHour.objects.filter(pool=pool, hour__gte=ledger_open_from(now)).order_by("hour")
    if start is not None:
        rows = rows.filter(hour__gte=start, hour__lt=end)
    rows = list(rows.select_for_update(of=("self",)))
    if not rows:
        return
    capacity = capacity_for_hours(pool, [row.hour for row in rows])
    changed = []
    for row in rows:
        new_capacity = capacity[row.hour]
        if new_capacity < row.booked:
            raise CapacityInUse(
                f"{row.booked} GPUs are booked at {row.hour:%Y-%m-%dT%H:00Z} but only "
                f"{new_capacity} would remain. Cancel or move those reservations first.",
                extra={
                    "hour": row.hour.isoformat(),
                    "booked_gpus": row.booked,
                    "capacity_gpus": new_capacity,
                },
            )
        if new_capacity != row.capacity:
            row.capacity = new_capacity
            changed.append(row)
    PoolHour.objects.bulk_update(changed, ["capacity"], batch_size=1000)


def _validate_window(start: datetime, end: datetime) -> None:
    errors = {}
    for name, value in (("start", start), ("end", end)):
        if value.tzinfo is None:
            errors[name] = [{"code": "naive_datetime", "message": "Give a UTC offset."}]
        elif not _on_utc_hour(value):
            errors[name] = [{"code": "not_whole_hour", "message": "Must fall on a whole hour."}]
    if errors:
        raise InvalidWindow("Windows start and end on whole UTC hours.", fields=errors)
    if end.astimezone(UTC) <= start.astimezone(UTC):
        raise InvalidWindow(
            "The window must end after it starts.",
            fields={"end": [{"code": "before_start", "message": "Must be after start."}]},
        )


@transaction.atomic
def maintenance_window_create(
    *,
    pool: CapacityPool,
    start: datetime,
    end: datetime,
    gpus: int,
    kind: str = MaintenanceWindow.Kind.MAINTENANCE,
    reason: str = "",
    now: datetime | None = None,
) -> MaintenanceWindow:
    """Take ``gpus`` out of the pool for [start, end).

    The ledger follows from the hour in progress at ``now`` on; earlier hours are history and
    keep their capacity. Raises CapacityInUse when reservations already hold GPUs the window
    would remove from such an hour: the ledger never shows more booked than sellable, so those
    must be moved or cancelled first."""
    _validate_window(start, end)
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    locked = locks.pool_lock(pool.pk)
    window = MaintenanceWindow.objects.create(
        pool=locked, start=start, end=end, gpus=gpus, kind=kind, reason=reason
    )
    _refresh_ledger(locked, now, start, end)
    return window


@transaction.atomic
def maintenance_window_delete(*, window: MaintenanceWindow, now: datetime | None = None) -> None:
    """Give the window's GPUs back to the pool from the hour in progress at ``now`` on."""
    locked = locks.pool_lock(window.pool_id)
    start, end = window.start, window.end
    window.delete()
    _refresh_ledger(locked, now, start, end)


@transaction.atomic
def pool_update(
    *, pool: CapacityPool, now: datetime | None = None, **changes: object
) -> CapacityPool:
    """Change a pool; when its size, hold-back or contract window changes, the ledger follows
    from the hour in progress at ``now`` on (earlier hours are history).

    Raises CapacityInUse if booked GPUs would no longer fit in such an hour."""
    locked = locks.pool_lock(pool.pk)
    for field, value in changes.items():
        setattr(locked, field, value)
    locked.full_clean()
    locked.save()
    if POOL_CAPACITY_FIELDS & changes.keys():
        locked.refresh_from_db()
        _refresh_ledger(locked, now)
    return locked
