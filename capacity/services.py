"""Writes to the capacity catalogue and to the capacity ledger.

The ledger functions (``capacity_claim`` / ``capacity_release``) are the only code that changes
``PoolHour.booked``; marketplace calls them inside its own booking transaction. Incidents
lower capacity here and never fail because GPUs are booked: what no longer fits is marked
``excess`` for the marketplace to move (capacity knows nothing of reservations)."""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Greatest, Least

from capacity import locks
from capacity.errors import CapacityInUse, InsufficientCapacity, InvalidIncident, InvalidWindow
from capacity.models import CapacityPool, Incident, PoolCostRate, PoolHour
from capacity.selectors import capacity_for_hours, ledger_open_from
from core.timeutils import ceil_hour, hour_range, is_whole_hour, utcnow

# Fields an operator may change on a pool; capacity-affecting ones trigger a ledger refresh.
POOL_CAPACITY_FIELDS = {
    "gpus_per_node",
    "node_count",
    "reserved_gpus",
    "available_from",
    "available_until",
}


def _ensure_pool_hours(pool_id: int, start: datetime, end: datetime) -> bool:
    """Create the missing ledger rows of [start, end) for a pool; True if any was missing.

    Runs under the pool row lock, which is also what maintenance and pool edits take before
    recomputing capacity: a row is therefore never created from a capacity figure that a
    concurrent change is about to make stale."""
    hours = hour_range(start, end)
    existing = PoolHour.objects.filter(pool_id=pool_id, hour__gte=start, hour__lt=end).count()
    if existing == len(hours):
        return False
    pool = locks.pool_lock(pool_id)
    capacity = capacity_for_hours(pool, hours)
    PoolHour.objects.bulk_create(
        [PoolHour(pool_id=pool_id, hour=hour, capacity=capacity[hour]) for hour in hours],
        ignore_conflicts=True,
    )
    return True


def _on_utc_hour(moment: datetime) -> bool:
    # The ledger's rows are UTC hours: 09:00+05:30 is 03:30Z and would start a second,
    # misaligned grid of rows that overlaps the first without either row seeing the other.
    return moment.tzinfo is not None and is_whole_hour(moment.astimezone(UTC))


# The claim in one statement: when every hour of the window has a ledger row, each row in
# ascending hour order (the ledger's lock order) is locked as ON CONFLICT finds it and gets the
# GPUs if they fit in its newest version; all rows are locked either way. It returns the ids of
# the rows that got them: all of them, or the claim failed (partly added GPUs are then taken
# back). With a missing row it locks and changes nothing, so that the caller may take the pool
# lock (never after ledger rows) to create it. No row is ever inserted: each one conflicts
# with itself.
_CLAIM_SQL = """
INSERT INTO {table} (pool_id, hour, capacity, booked, excess)
SELECT pool_id, hour, capacity, booked, excess FROM {table}
WHERE pool_id = %(pool)s AND hour >= %(start)s AND hour < %(end)s
  AND (SELECT count(*) FROM {table}
       WHERE pool_id = %(pool)s AND hour >= %(start)s AND hour < %(end)s) = %(hours)s
ORDER BY hour
ON CONFLICT (pool_id, hour) DO UPDATE SET booked = {table}.booked + %(gpus)s
WHERE {table}.booked + %(gpus)s <= {table}.capacity
RETURNING id
"""


def _claim_at_once(pool_id: int, start: datetime, end: datetime, gpus: int) -> bool:
    """Try the claim in one statement (``_CLAIM_SQL``). False when it did not go through as a
    whole: nothing is left changed, and the rows it saw may stay locked."""
    ops = connection.ops
    hours = len(hour_range(start, end))
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL.format(table=ops.quote_name(PoolHour._meta.db_table)),
            {
                "pool": pool_id,
                "start": ops.adapt_datetimefield_value(start),
                "end": ops.adapt_datetimefield_value(end),
                "hours": hours,
                "gpus": gpus,
            },
        )
        claimed = [row_id for (row_id,) in cursor.fetchall()]
    if len(claimed) == hours:
        return True
    if claimed:  # some hours had room, another had not: give those back (rows locked by us)
        PoolHour.objects.filter(pk__in=claimed).update(booked=F("booked") - gpus)
    return False


def capacity_claim(*, pool_id: int, start: datetime, end: datetime, gpus: int) -> None:
    """Add ``gpus`` to every hour of [start, end) on the pool, or raise InsufficientCapacity
    (then no hour changed, so a caller may try another pool without a savepoint; the rows it
    looked at may stay locked until the transaction ends).

    Must run inside the caller's transaction; the ledger rows stay locked until it commits.
    Raises InvalidWindow unless both ends are whole UTC hours."""
    if not (_on_utc_hour(start) and _on_utc_hour(end)):
        raise InvalidWindow("Ledger windows start and end on whole UTC hours.")
    start, end = start.astimezone(UTC), end.astimezone(UTC)  # step through UTC hours
    if _claim_at_once(pool_id, start, end, gpus):
        return
    # A missing row (the first booking of an hour: created now, and the claim tried again),
    # too little room, or a row committed by another booking since the statement began. A
    # row is missing only if the statement locked nothing, so the pool lock may be taken.
    if _ensure_pool_hours(pool_id, start, end) and _claim_at_once(pool_id, start, end, gpus):
        return
    # Step by step, under the same locks, to say how many GPUs are free.
    rows = locks.pool_hours_lock([pool_id], start, end)
    free = min(row.free for row in rows)
    if free < gpus:
        raise InsufficientCapacity(
            f"Only {free} GPUs are free in the pool for the whole window; {gpus} were requested.",
            extra={"available_gpus": free},
        )
    PoolHour.objects.filter(pk__in=[row.pk for row in rows]).update(booked=F("booked") + gpus)


def capacity_release(*, pool_id: int, start: datetime, end: datetime, gpus: int) -> None:
    """Give back ``gpus`` in every hour of [start, end). Inside the caller's transaction.

    In an hour an incident overbooked, the released GPUs first pay off its ``excess``."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if start >= end:
        return
    rows = locks.pool_hours_lock([pool_id], start, end)
    PoolHour.objects.filter(pk__in=[row.pk for row in rows]).update(
        booked=F("booked") - gpus,
        # SET sees the row as it was: the excess left is what is still booked beyond capacity.
        excess=Greatest(Value(0), Least(F("excess"), F("booked") - gpus - F("capacity"))),
    )


def ledger_shift(deltas: dict[tuple[int, datetime], int]) -> None:
    """Add ``delta`` GPUs to ``booked`` of each (pool id, hour) row — rows the caller locked with
    ``ledger_lock`` and checked for room. Rows sharing a pool and delta change in one UPDATE.
    Released GPUs pay off an hour's ``excess`` first; the CHECK constraints refuse any claim
    beyond capacity, whatever the caller checked."""
    groups: dict[tuple[int, int], list[datetime]] = {}
    for (pool_id, hour), delta in deltas.items():
        if delta:
            groups.setdefault((pool_id, delta), []).append(hour)
    for (pool_id, delta), hours in sorted(groups.items()):
        rows = PoolHour.objects.filter(pool_id=pool_id, hour__in=hours)
        if delta > 0:
            rows.update(booked=F("booked") + delta)
        else:
            rows.update(
                booked=F("booked") + delta,
                excess=Greatest(Value(0), Least(F("excess"), F("booked") + delta - F("capacity"))),
            )


def ledger_lock(spans: Iterable[tuple[int, datetime, datetime]]) -> list[PoolHour]:
    """Create the missing ledger rows of every ``(pool_id, start, end)`` span, then lock all
    of them in one statement in ascending (pool, hour) order: what a transaction that changes
    several pools (a reservation moved off a failed pool) takes before it claims or releases,
    so it can never deadlock with a booking or another move."""
    spans = sorted(
        (pool_id, start.astimezone(UTC), end.astimezone(UTC)) for pool_id, start, end in spans
    )
    spans = [span for span in spans if span[1] < span[2]]
    if not spans:
        return []
    for pool_id, start, end in spans:  # pool locks (if any) in ascending id order, before rows
        _ensure_pool_hours(pool_id, start, end)
    where = Q()
    for pool_id, start, end in spans:
        where |= Q(pool_id=pool_id, hour__gte=start, hour__lt=end)
    return list(
        PoolHour.objects.filter(where).order_by("pool_id", "hour").select_for_update(of=("self",))
    )


def _refresh_ledger(
    pool: CapacityPool,
    start: datetime,
    end: datetime | None = None,
    *,
    strict: bool = False,
) -> int:
    """Recompute ``capacity`` of the pool's ledger rows in [start, end) (``end`` None: from
    ``start`` on) from the pool and its incidents; the pool row must be locked. Booked GPUs
    that no longer fit become ``excess``; with ``strict`` (a pool edit) that is refused with
    CapacityInUse instead. Returns how many GPU-hours are now in excess."""
    query = PoolHour.objects.filter(pool=pool, hour__gte=start).order_by("hour")
    if end is not None:
        query = query.filter(hour__lt=end)
    rows = list(query.select_for_update(of=("self",)))
    if not rows:
        return 0
    capacity = capacity_for_hours(pool, [row.hour for row in rows])
    changed = []
    for row in rows:
        new_capacity = capacity[row.hour]
        if strict and new_capacity < row.booked:
            raise CapacityInUse(
                f"{row.booked} GPUs are booked at {row.hour:%Y-%m-%dT%H:00Z} but only "
                f"{new_capacity} would remain. Record an incident to move those reservations, "
                "or cancel them first.",
                extra={
                    "hour": row.hour.isoformat(),
                    "booked_gpus": row.booked,
                    "capacity_gpus": new_capacity,
                },
            )
        excess = max(0, row.booked - new_capacity)
        if (new_capacity, excess) != (row.capacity, row.excess):
            row.capacity, row.excess = new_capacity, excess
            changed.append(row)
    PoolHour.objects.bulk_update(changed, ["capacity", "excess"], batch_size=1000)
    return sum(row.excess for row in rows)


def _validate_hour(name: str, value: datetime) -> dict:
    if value.tzinfo is None:
        return {name: [{"code": "naive_datetime", "message": "Give a UTC offset."}]}
    if not _on_utc_hour(value):
        return {name: [{"code": "not_whole_hour", "message": "Must fall on a whole UTC hour."}]}
    return {}


@transaction.atomic
def incident_open(
    *,
    pool: CapacityPool,
    kind: str,
    gpus: int,
    start: datetime,
    end: datetime | None = None,
    reason: str = "",
    recorded_by: str = "",
    now: datetime | None = None,
) -> Incident:
    """Take ``gpus`` of the pool out of service for [start, end) (``end`` None: until closed).

    The ledger follows at once from ``start`` on — also for hours already past (a failure found
    late: those hours were not delivered; their rows lose ``gpus`` from the capacity they had,
    later ones are recomputed from the pool). Planned maintenance starts no earlier than the hour
    in progress. Booked GPUs that no longer fit are marked ``excess``; never refused for them.
    A recall is for backup capacity; recorded with less than the pool's recall notice, it is
    ``short_notice``. Raises InvalidIncident / InvalidWindow for bad input."""
    now = now or utcnow()
    errors = _validate_hour("start", start)
    if end is not None:
        errors |= _validate_hour("end", end)
    if errors:
        raise InvalidWindow("Incidents start and end on whole UTC hours.", fields=errors)
    start = start.astimezone(UTC)
    end = end.astimezone(UTC) if end is not None else None
    if end is not None and end <= start:
        raise InvalidWindow(
            "The incident must end after it starts.",
            fields={"end": [{"code": "before_start", "message": "Must be after start."}]},
        )
    if kind not in Incident.Kind.values:
        raise InvalidIncident(
            f"Unknown incident kind {kind!r}.",
            fields={"kind": [{"code": "invalid_choice", "message": "Unknown kind."}]},
        )
    locked = locks.pool_lock(pool.pk)
    if not 0 < gpus <= locked.total_gpus:
        raise InvalidIncident(
            f"An incident takes between 1 and the pool's {locked.total_gpus} GPUs.",
            fields={"gpus": [{"code": "out_of_range", "message": f"1..{locked.total_gpus}."}]},
        )
    if kind == Incident.Kind.MAINTENANCE and start < ledger_open_from(now):
        raise InvalidWindow(
            "Planned maintenance cannot start in the past; record an outage instead.",
            fields={"start": [{"code": "in_past", "message": "Not before the current hour."}]},
        )
    if kind == Incident.Kind.RECALL and not locked.recallable:
        raise InvalidIncident(
            "Only backup capacity is sold as recallable; record a provider reclaim or an "
            "outage for a primary pool.",
            fields={"kind": [{"code": "not_recallable", "message": "Pool is not backup tier."}]},
        )
    incident = Incident.objects.create(
        pool=locked,
        kind=kind,
        gpus=gpus,
        start=start,
        end=end,
        reason=reason[:500],
        recorded_by=recorded_by[:200],
        short_notice=(
            kind == Incident.Kind.RECALL
            and start - now < timedelta(hours=locked.recall_notice_hours)
        ),
    )
    open_from = ledger_open_from(now)
    if start < open_from:
        _lower_past(locked, gpus, start, open_from if end is None else min(end, open_from))
    _refresh_ledger(locked, max(start, open_from), end)
    return incident


def _lower_past(pool: CapacityPool, gpus: int, start: datetime, end: datetime) -> None:
    """A failure found late: take ``gpus`` off the capacity the hours of [start, end) had
    (history keeps its own pool size and earlier incidents; only this loss is new)."""
    PoolHour.objects.filter(pool=pool, hour__gte=start, hour__lt=end).update(
        capacity=Greatest(Value(0), F("capacity") - gpus),
        excess=Greatest(Value(0), F("booked") - Greatest(Value(0), F("capacity") - gpus)),
    )


@transaction.atomic
def incident_close(
    *, incident: Incident, end: datetime | None = None, now: datetime | None = None
) -> Incident:
    """The incident's GPUs are back from ``end`` (default: the next whole hour, or the
    incident's own end if that comes first; an incident that has not begun yet is withdrawn).
    Reservations already moved stay where they are. Closing a closed incident returns it
    unchanged. ``end`` cannot lie before the hour in progress: hours already past were dealt
    with when the incident was recorded."""
    now = now or utcnow()
    pool = locks.pool_lock(incident.pool_id)
    incident = Incident.objects.select_for_update().get(pk=incident.pk)
    if incident.closed_at is not None:
        return incident
    old_end = incident.end
    if end is None:
        end = max(ceil_hour(now), incident.start)
    else:
        if errors := _validate_hour("end", end):
            raise InvalidWindow("Incidents end on whole UTC hours.", fields=errors)
        end = end.astimezone(UTC)
        if end < incident.start or end < ledger_open_from(now):
            raise InvalidWindow(
                "The end lies before the incident's start or before the hour in progress.",
                fields={"end": [{"code": "in_past", "message": "Not before the current hour."}]},
            )
    if old_end is not None:
        end = min(end, old_end)
    incident.end = end
    incident.closed_at = now
    incident.save(update_fields=["end", "closed_at"])
    _refresh_ledger(pool, end, old_end)
    return incident


@transaction.atomic
def incidents_mark_displaced(*, incident_ids: list[int], now: datetime) -> None:
    Incident.objects.filter(pk__in=incident_ids, displaced_at__isnull=True).update(displaced_at=now)


@transaction.atomic
def pool_create(*, pool: CapacityPool) -> CapacityPool:
    """Save a new pool (an unsaved instance) and start its cost history: its cost is the rate
    in force from the start of its contract."""
    pool.full_clean()
    pool.save()
    PoolCostRate.objects.create(
        pool=pool, effective_from=pool.available_from, cost_per_gpu_hour=pool.cost_per_gpu_hour
    )
    return pool


def _cost_rate_change(
    pool: CapacityPool, *, start: datetime, old_cost: Decimal, contract_start: datetime
) -> None:
    """The pool costs ``pool.cost_per_gpu_hour`` from ``start`` on; earlier hours keep the rates
    they had. A pool without a rate in force at ``start`` (made before the cost history was
    kept, or by hand) gets ``old_cost`` from the start of its contract first, so that the hours
    before the change keep what they cost."""
    rates = PoolCostRate.objects.filter(pool=pool)
    if contract_start < start and not rates.filter(effective_from__lte=start).exists():
        PoolCostRate.objects.create(
            pool=pool, effective_from=contract_start, cost_per_gpu_hour=old_cost
        )
    # A second change within the same hour replaces the first: that hour is not history yet.
    PoolCostRate.objects.update_or_create(
        pool=pool,
        effective_from=start,
        defaults={"cost_per_gpu_hour": pool.cost_per_gpu_hour},
    )


@transaction.atomic
def pool_update(
    *, pool: CapacityPool, now: datetime | None = None, **changes: object
) -> CapacityPool:
    """Change a pool; when its size, hold-back or contract window changes, the ledger follows
    from the hour in progress at ``now`` on (earlier hours are history). A new
    ``cost_per_gpu_hour`` is a new rate from that hour on (``PoolCostRate``): hours before it
    are metered at the rates that were in force then.

    Raises CapacityInUse if booked GPUs would no longer fit in such an hour: taking booked
    GPUs away is an incident (``provider_reclaim``), which moves the reservations."""
    locked = locks.pool_lock(pool.pk)
    old_cost, contract_start = locked.cost_per_gpu_hour, locked.available_from
    for field, value in changes.items():
        setattr(locked, field, value)
    locked.full_clean()
    locked.save()
    if "cost_per_gpu_hour" in changes and locked.cost_per_gpu_hour != old_cost:
        _cost_rate_change(
            locked,
            start=ledger_open_from(now),
            old_cost=old_cost,
            contract_start=contract_start,
        )
    if POOL_CAPACITY_FIELDS & changes.keys():
        locked.refresh_from_db()
        _refresh_ledger(locked, ledger_open_from(now), strict=True)
    return locked
