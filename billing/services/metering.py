"""Metering: one ``UsageRecord`` per delivered hour of every reservation, and one ``Charge`` per
cancellation fee.

Delivered hours of a reservation are the whole UTC hours of [start, capacity_until) — the whole
booking once it ran, the hours up to the cancellation (the hour in progress included) once
cancelled — that have begun before ``until``, except hours in which the pool had a recorded
*outage* (``MaintenanceWindow`` of kind ``outage``). Planned maintenance never takes booked GPUs
(the capacity service refuses it), so it never costs a tenant an hour. An outage recorded
after its hours were metered is applied when the invoice is (re)built: see invoicing.py.

Exactly once: records are keyed (reservation, hour) by a unique constraint and written with
INSERT ... ON CONFLICT DO NOTHING, so a re-run, an overlapping run or two workers at once
change nothing. Each run re-reads ``BILLING_METERING_LOOKBACK_HOURS`` before the previous
run's end (a quote confirmed just after a run still gets its first hour) and back-fills
everything after it, so a scheduler that was down for a day loses nothing."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from billing import locks
from billing.models import Charge, UsageRecord
from capacity.models import CapacityPool, MaintenanceWindow
from core.timeutils import HOUR, floor_hour, hour_range, utcnow
from marketplace.models import Reservation

# Reservations that deliver hours. ``confirmed`` is included: delivery follows the clock, not
# the lifecycle task, which may lag behind a reservation's start.
BILLED_STATUSES = (
    Reservation.Status.CONFIRMED,
    Reservation.Status.ACTIVE,
    Reservation.Status.COMPLETED,
    Reservation.Status.CANCELLED,
)
BATCH_SIZE = 2000


@dataclass(frozen=True)
class MeteringResult:
    until: datetime
    usage_created: int
    charges_created: int


@transaction.atomic
def meter_usage(*, until: datetime | None = None) -> MeteringResult:
    """Record every delivered hour that began before ``until`` (floored to the hour; default
    now) and every cancellation fee incurred before it. Idempotent; safe to run concurrently
    (runs queue on the metering cursor row)."""
    until = floor_hour(until or utcnow())
    started_at = utcnow()
    cursor = locks.metering_cursor_lock()
    lookback = timedelta(hours=settings.BILLING_METERING_LOOKBACK_HOURS)
    low = None if cursor.metered_until is None else min(cursor.metered_until, until) - lookback
    if connection.vendor == "postgresql":
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


def _meter_postgresql(*, until: datetime, low: datetime | None, created_at: datetime) -> int:
    """One INSERT ... SELECT over generate_series: the database expands reservations into
    hours and skips the existing ones; nothing crosses the wire per row."""
    sql = f"""
        INSERT INTO {UsageRecord._meta.db_table}
            (reservation_id, tenant_id, pool_id, hour, gpus, gpu_hours, unit_price, amount,
             cost_per_gpu_hour, provider_cost, currency, invoice_id, created_at)
        SELECT r.id, r.tenant_id, r.pool_id, h.hour, r.gpu_count, r.gpu_count, r.unit_price,
               r.unit_price * r.gpu_count, p.cost_per_gpu_hour,
               p.cost_per_gpu_hour * r.gpu_count, r.currency, NULL, %(created_at)s
        FROM {Reservation._meta.db_table} r
        JOIN {CapacityPool._meta.db_table} p ON p.id = r.pool_id
        CROSS JOIN LATERAL generate_series(
            GREATEST(r.start, COALESCE(%(low)s, r.start)),
            LEAST(r.capacity_until, %(until)s) - interval '1 hour',
            interval '1 hour'
        ) AS h(hour)
        WHERE r.status = ANY(%(statuses)s)
          AND r.start < %(until)s
          AND (%(low)s::timestamptz IS NULL OR r.capacity_until > %(low)s)
          AND NOT EXISTS (
              SELECT 1 FROM {MaintenanceWindow._meta.db_table} w
              WHERE w.pool_id = r.pool_id AND w.kind = %(outage)s
                AND w.start < h.hour + interval '1 hour' AND w."end" > h.hour
          )
        ON CONFLICT (reservation_id, hour) DO NOTHING
    """  # noqa: S608 - table names come from model metadata, values are parameters
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "until": until,
                "low": low,
                "created_at": created_at,
                "statuses": list(BILLED_STATUSES),
                "outage": MaintenanceWindow.Kind.OUTAGE,
            },
        )
        return cursor.rowcount


def _meter_portable(*, until: datetime, low: datetime | None) -> int:
    """The same result for other databases (SQLite in development): hours expanded in Python,
    written in batches with INSERT ... ON CONFLICT DO NOTHING."""
    reservations = (
        Reservation.objects.filter(status__in=BILLED_STATUSES, start__lt=until)
        .select_related("pool")
        .order_by("pk")
    )
    outage_windows = MaintenanceWindow.objects.filter(
        kind=MaintenanceWindow.Kind.OUTAGE, start__lt=until
    )
    if low is not None:
        reservations = reservations.filter(capacity_until__gt=low)
        outage_windows = outage_windows.filter(end__gt=low)
    outages: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    for pool_id, start, end in outage_windows.values_list("pool_id", "start", "end"):
        outages[pool_id].append((start, end))

    before = UsageRecord.objects.count()
    batch: list[UsageRecord] = []
    for reservation in reservations.iterator(chunk_size=500):
        first = reservation.start if low is None else max(reservation.start, low)
        for hour in hour_range(first, min(reservation.capacity_until, until)):
            if any(
                start < hour + HOUR and end > hour for start, end in outages[reservation.pool_id]
            ):
                continue
            batch.append(
                UsageRecord(
                    reservation_id=reservation.pk,
                    tenant_id=reservation.tenant_id,
                    pool_id=reservation.pool_id,
                    hour=hour,
                    gpus=reservation.gpu_count,
                    gpu_hours=reservation.gpu_count,
                    unit_price=reservation.unit_price,
                    amount=reservation.unit_price * reservation.gpu_count,
                    cost_per_gpu_hour=reservation.pool.cost_per_gpu_hour,
                    provider_cost=reservation.pool.cost_per_gpu_hour * reservation.gpu_count,
                    currency=reservation.currency,
                )
            )
        if len(batch) >= BATCH_SIZE:
            UsageRecord.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
    UsageRecord.objects.bulk_create(batch, ignore_conflicts=True, batch_size=BATCH_SIZE)
    return UsageRecord.objects.count() - before


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
            incurred_at=cancelled_at,
        )
        for pk, tenant_id, fee, currency, cancelled_at in fees
    ]
    Charge.objects.bulk_create(charges, ignore_conflicts=True, batch_size=BATCH_SIZE)
    return len(charges)
