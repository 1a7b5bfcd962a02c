"""Metering: one ``UsageRecord`` per delivered hour of every reservation placement, and one
``Charge`` per cancellation fee.

Delivered hours are the hours of a reservation's placements (``marketplace.Placement``: where
its GPUs actually are) that have begun before ``until``, for reservations that deliver
(confirmed, active, completed, cancelled). A booking has one placement on its own pool for
[start, end); a cancellation cuts it at the hour it gave back (the hour in progress included);
an expired hold has none. An incident that takes GPUs away shrinks or cuts the placement for
those hours (not delivered, not billed: there is nothing else to exclude), and GPUs moved to
other pools get placements there.

Each hour of a placement is one record keyed (reservation, hour, pool): ``gpus`` = the
placement's GPUs, ``amount`` = the reservation's locked ``unit_price`` x ``gpus`` (whatever
pool the GPUs are on), ``provider_cost`` = the placement pool's cost per GPU-hour in force at
that hour (its ``PoolCostRate`` history: a later cost change does not reach back) x
``gpus``. (A reservation's placements on one pool never overlap; should two ever cover the
same hour, their GPUs are summed into the one record.) An incident recorded after its hours
were metered is applied by the usage corrections (corrections.py).

Exactly once: the unique key and INSERT ... ON CONFLICT DO NOTHING make a re-run, an
overlapping run or two workers at once change nothing. Each run re-reads
``BILLING_METERING_LOOKBACK_HOURS`` before the previous run's end (a quote confirmed just after
a run still gets its first hour) and back-fills everything after it, so a scheduler that was
down for a day loses nothing."""

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import groupby
from typing import Any, cast
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction

from billing import locks
from billing.db import jit_off
from billing.errors import UntilInFuture
from billing.models import Charge, UsageRecord
from capacity.models import CapacityPool, PoolCostRate
from core.timeutils import floor_hour, hour_range, utcnow
from marketplace.models import Placement, Reservation

# Reservations that deliver hours. ``confirmed`` is included: delivery follows the clock, not
# the lifecycle task, which may lag behind a reservation's start.
BILLED_STATUSES = (
    Reservation.Status.CONFIRMED,
    Reservation.Status.ACTIVE,
    Reservation.Status.COMPLETED,
    Reservation.Status.CANCELLED,
)
BATCH_SIZE = 2000

# (reservation id, first hour, end): hours of one reservation to meter again.
Window = tuple[UUID, datetime, datetime]


@dataclass(frozen=True)
class MeteringResult:
    until: datetime
    usage_created: int
    charges_created: int


@transaction.atomic
def meter_usage(*, until: datetime | None = None) -> MeteringResult:
    """Record every delivered hour that began before ``until`` (floored to the hour; default
    now) and every cancellation fee incurred before it. Idempotent; safe to run concurrently
    (runs queue on the metering cursor row).

    Metering stops at the last whole hour: an ``until`` after now raises UntilInFuture and
    meters nothing (it would bill hours not delivered yet, which a cancellation or an incident
    may still take away)."""
    started_at = utcnow()
    if until is not None and until > started_at:
        raise UntilInFuture(
            f"until {until.isoformat()} is in the future (now {started_at.isoformat()}): "
            "usage is metered only up to the last whole hour.",
            extra={"until": until.isoformat(), "now": started_at.isoformat()},
        )
    until = floor_hour(until or started_at)
    cursor = locks.metering_cursor_lock()
    lookback = timedelta(hours=settings.BILLING_METERING_LOOKBACK_HOURS)
    low = None if cursor.metered_until is None else min(cursor.metered_until, until) - lookback
    if connection.vendor == "postgresql":
        jit_off()
        usage_created = _meter_postgresql(until=until, low=low, created_at=started_at)
    else:
        usage_created = _meter_portable(until=until, low=low)
    charges_created = _charge_cancellation_fees(until=until, low=low)
    cursor.metered_until = max(cursor.metered_until or until, until)
    cursor.last_run_at = started_at
    cursor.save()
    return MeteringResult(
        until=until,
        usage_created=usage_created,
        charges_created=charges_created,
    )


def usage_meter_windows(*, windows: Sequence[Window], created_at: datetime) -> int:
    """Meter again, from the placements, the hours of each window's reservation in
    [first hour, end) (the usage corrections' re-metering): missing records are written,
    existing ones left alone. The caller holds the metering cursor and passes ends no later
    than what metering has reached. Returns how many records were written."""
    windows = [window for window in windows if window[2] > window[1]]
    if not windows:
        return 0
    if connection.vendor == "postgresql":
        return _meter_windows_postgresql(windows=windows, created_at=created_at)
    placements = Placement.objects.none()
    for reservation_id, start, end in windows:
        placements |= Placement.objects.filter(
            reservation_id=reservation_id, start__lt=end, end__gt=start
        )
    spans: dict[UUID, list[tuple[datetime, datetime]]] = {}
    for reservation_id, start, end in windows:
        spans.setdefault(reservation_id, []).append((start, end))
    return _insert_portable(
        _placement_rows(placements),
        lambda reservation_id, p_start, p_end: [
            (max(p_start, start), min(p_end, end)) for start, end in spans[reservation_id]
        ],
    )


# The pools' cost per GPU-hour as intervals ``[lo, hi)``: each ``PoolCostRate`` until the next
# one (``hi`` NULL: open-ended), and before a pool's first rate (or always, for a pool without
# cost history) its current cost. A placement is joined to the intervals it overlaps and
# expanded over each overlap, so every hour carries the rate in force then without a lookup
# per hour.
_RATES = f"""
    WITH rates AS (
        SELECT cr.pool_id, cr.effective_from AS lo,
               lead(cr.effective_from) OVER (
                   PARTITION BY cr.pool_id ORDER BY cr.effective_from) AS hi,
               cr.cost_per_gpu_hour AS cost
        FROM {PoolCostRate._meta.db_table} cr
        UNION ALL
        SELECT p.id, '-infinity'::timestamptz,
               (SELECT min(cr.effective_from) FROM {PoolCostRate._meta.db_table} cr
                WHERE cr.pool_id = p.id),
               p.cost_per_gpu_hour
        FROM {CapacityPool._meta.db_table} p
    )
"""  # noqa: S608 - table names come from model metadata

# The record columns from the placements ``pl`` of reservation ``r`` on pool ``p`` at hour
# ``h``, costed by the rate interval ``rt`` (summed: should two placements on one pool ever
# cover the same hour, the hour is still one record, of their GPUs together). Append the hours
# (``h``, within ``rt``), WHERE, _GROUP and the conflict clause.
_INSERT = f"""
    {_RATES}
    INSERT INTO {UsageRecord._meta.db_table}
        (reservation_id, tenant_id, pool_id, hour, gpus, gpu_hours, unit_price, amount,
         cost_per_gpu_hour, provider_cost, currency, invoice_id, created_at)
    SELECT r.id, r.tenant_id, p.id, h.hour, SUM(pl.gpus), SUM(pl.gpus), r.unit_price,
           r.unit_price * SUM(pl.gpus), rt.cost, rt.cost * SUM(pl.gpus),
           r.currency, NULL, %(created_at)s
    FROM {Placement._meta.db_table} pl
    JOIN {Reservation._meta.db_table} r ON r.id = pl.reservation_id
    JOIN {CapacityPool._meta.db_table} p ON p.id = pl.pool_id
    JOIN rates rt ON rt.pool_id = pl.pool_id AND rt.lo < pl."end"
                 AND (rt.hi IS NULL OR rt.hi > pl.start)
"""  # noqa: S608 - table names come from model metadata, values are parameters
_GROUP = "GROUP BY r.id, p.id, h.hour, rt.cost"
_ON_CONFLICT = "ON CONFLICT (reservation_id, hour, pool_id) DO NOTHING"


def _meter_postgresql(*, until: datetime, low: datetime | None, created_at: datetime) -> int:
    """One INSERT ... SELECT over generate_series: the database expands placements into
    hours and skips the existing ones; nothing crosses the wire per row."""
    sql = f"""
        {_INSERT}
        CROSS JOIN LATERAL generate_series(
            GREATEST(pl.start, rt.lo, COALESCE(%(low)s, pl.start)),
            LEAST(pl."end", rt.hi, %(until)s) - interval '1 hour',
            interval '1 hour'
        ) AS h(hour)
        WHERE r.status = ANY(%(statuses)s)
          AND pl.start < %(until)s
          AND (%(low)s::timestamptz IS NULL OR pl."end" > %(low)s)
        {_GROUP}
        {_ON_CONFLICT}
    """
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "until": until,
                "low": low,
                "created_at": created_at,
                "statuses": list(BILLED_STATUSES),
            },
        )
        return cursor.rowcount


def _meter_windows_postgresql(*, windows: Sequence[Window], created_at: datetime) -> int:
    """``usage_meter_windows`` in one INSERT ... SELECT, the windows joined as VALUES."""
    rows = ", ".join(
        f"(%(r{i})s::uuid, %(lo{i})s::timestamptz, %(hi{i})s::timestamptz)"
        for i in range(len(windows))
    )
    sql = f"""
        {_INSERT}
        JOIN (VALUES {rows}) AS w(reservation_id, lo, hi)
          ON w.reservation_id = pl.reservation_id AND pl.start < w.hi AND pl."end" > w.lo
        CROSS JOIN LATERAL generate_series(
            GREATEST(pl.start, rt.lo, w.lo), LEAST(pl."end", rt.hi, w.hi) - interval '1 hour',
            interval '1 hour'
        ) AS h(hour)
        WHERE r.status = ANY(%(statuses)s)
        {_GROUP}
        {_ON_CONFLICT}
    """
    params: dict[str, Any] = {"created_at": created_at, "statuses": list(BILLED_STATUSES)}
    for i, (reservation_id, start, end) in enumerate(windows):
        params.update({f"r{i}": reservation_id, f"lo{i}": start, f"hi{i}": end})
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _placement_rows(placements) -> Iterable[tuple]:
    """The billed placements' figures, a reservation's placements one after the other."""
    return (
        placements.filter(reservation__status__in=BILLED_STATUSES)
        .order_by("reservation_id", "pk")
        .values_list(
            "reservation_id",
            "reservation__tenant_id",
            "pool_id",
            "start",
            "end",
            "gpus",
            "reservation__unit_price",
            "reservation__currency",
            "pool__cost_per_gpu_hour",
        )
        .iterator(chunk_size=500)
    )


class _CostRates:
    """The pools' cost rates, read once per pool: the cost per GPU-hour in force at an hour
    (the latest rate from that hour or before; else, for a pool without cost history, its
    current cost), as ``_RATES`` gives it in SQL."""

    def __init__(self) -> None:
        self._rates: dict[int, tuple[list[datetime], list[Decimal]]] = {}

    def at(self, pool_id: int, hour: datetime, current: Decimal) -> Decimal:
        if pool_id not in self._rates:
            rates = PoolCostRate.objects.filter(pool_id=pool_id).order_by("effective_from")
            rows = list(rates.values_list("effective_from", "cost_per_gpu_hour"))
            self._rates[pool_id] = ([start for start, _ in rows], [cost for _, cost in rows])
        starts, costs = self._rates[pool_id]
        index = bisect_right(starts, hour)
        return costs[index - 1] if index else current


def _insert_portable(rows: Iterable[tuple], spans) -> int:
    """Expand placement rows into records over ``spans(reservation_id, start, end)`` (the
    parts of the placement to meter), the GPUs of one reservation, pool and hour summed, and
    write them in batches, ON CONFLICT DO NOTHING. Each hour costs the pool's rate in force
    then."""
    before = UsageRecord.objects.count()
    batch: list[UsageRecord] = []
    rates = _CostRates()
    for _, placements in groupby(rows, key=lambda row: row[0]):
        records: dict[tuple[int, datetime], UsageRecord] = {}
        for (
            reservation_id,
            tenant_id,
            pool_id,
            start,
            end,
            gpus,
            price,
            currency,
            cost,
        ) in placements:
            for first, last in spans(reservation_id, start, end):
                for hour in hour_range(first, last) if last > first else []:
                    record = records.get((pool_id, hour))
                    if record is None:
                        record = records[pool_id, hour] = UsageRecord(
                            reservation_id=reservation_id,
                            tenant_id=tenant_id,
                            pool_id=pool_id,
                            hour=hour,
                            gpus=0,
                            unit_price=price,
                            cost_per_gpu_hour=rates.at(pool_id, hour, cost),
                            currency=currency,
                        )
                    record.gpus += gpus
        for record in records.values():
            record.gpu_hours = record.gpus
            record.amount = record.unit_price * record.gpus
            record.provider_cost = record.cost_per_gpu_hour * record.gpus
        batch.extend(sorted(records.values(), key=lambda record: (record.hour, record.pool_id)))
        if len(batch) >= BATCH_SIZE:
            UsageRecord.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
    UsageRecord.objects.bulk_create(batch, ignore_conflicts=True, batch_size=BATCH_SIZE)
    return UsageRecord.objects.count() - before


def _meter_portable(*, until: datetime, low: datetime | None) -> int:
    """The same result for other databases (SQLite in development): hours expanded in Python,
    written in batches with INSERT ... ON CONFLICT DO NOTHING."""
    placements = Placement.objects.filter(start__lt=until)
    if low is not None:
        placements = placements.filter(end__gt=low)
    return _insert_portable(
        _placement_rows(placements),
        lambda reservation_id, start, end: [
            (start if low is None else max(start, low), min(end, until))
        ],
    )


def _charge_cancellation_fees(*, until: datetime, low: datetime | None) -> int:
    """A ``Charge`` per cancellation fee incurred before ``until``; it is billed in the month
    of the cancellation. Unique per reservation, so re-runs add nothing."""
    fees = (
        Reservation.objects.filter(
            status=Reservation.Status.CANCELLED, cancellation_fee__gt=0, cancelled_at__lt=until
        )
        .exclude(charges__kind=Charge.Kind.CANCELLATION_FEE)
        .values_list("pk", "tenant_id", "cancellation_fee", "currency", "cancelled_at")
    )
    if low is not None:
        fees = fees.filter(cancelled_at__gte=low)
    charges = [
        Charge(
            reservation_id=pk,
            tenant_id=tenant_id,
            kind=Charge.Kind.CANCELLATION_FEE,
            amount=fee,
            currency=currency,
            incurred_at=cast(datetime, cancelled_at),  # set on every cancelled reservation
        )
        for pk, tenant_id, fee, currency, cancelled_at in fees
    ]
    Charge.objects.bulk_create(charges, ignore_conflicts=True, batch_size=BATCH_SIZE)
    return len(charges)
