from datetime import timedelta
from decimal import Decimal

import pytest

from billing.models import Charge, MeteringCursor, UsageRecord
from billing.services.metering import _meter_portable, meter_usage
from core.timeutils import HOUR
from marketplace.models import Reservation
from tests.billing.conftest import at, displace, incident_record, reserve
from tests.db_helpers import run_concurrently


def usage_rows() -> list[tuple]:
    return list(
        UsageRecord.objects.order_by("reservation_id", "hour").values_list(
            "reservation_id", "hour", "gpus", "gpu_hours", "unit_price", "amount", "provider_cost"
        )
    )


@pytest.mark.django_db
def test_each_delivered_hour_becomes_one_usage_record(tenant, pool):
    # given a reservation of 8 GPUs at 3.0000 from 10:00, for 6 hours
    reservation = reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=6)

    # when metering runs at 14:30
    result = meter_usage(until=at(2, 14) + timedelta(minutes=30))

    # then the hours 10, 11, 12 and 13 are recorded (14:00 has not ended)
    assert result.usage_created == 4
    rows = usage_rows()
    assert [row[1] for row in rows] == [at(2, h) for h in (10, 11, 12, 13)]
    assert rows[0] == (
        reservation.pk,
        at(2, 10),
        8,
        Decimal("8.0000"),
        Decimal("3.0000"),
        Decimal("24.0000"),
        Decimal("16.0000"),
    )
    assert set(UsageRecord.objects.values_list("tenant_id", "pool_id", "currency")) == {
        (tenant.pk, pool.pk, "USD")
    }


@pytest.mark.django_db
def test_metering_twice_changes_nothing(tenant, pool):
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=6)
    meter_usage(until=at(3))
    first = usage_rows()

    result = meter_usage(until=at(3))

    assert result.usage_created == 0
    assert usage_rows() == first
    assert len(first) == 6


@pytest.mark.django_db(transaction=True)
def test_two_metering_runs_at_once_write_the_same_rows_as_one(tenant, pool):
    # given two reservations, metered once on their own as the reference
    reserve(tenant=tenant, pool=pool, start=at(2, 0), hours=48)
    reserve(tenant=tenant, pool=pool, start=at(3, 12), hours=30, gpus=16)
    meter_usage(until=at(5))
    expected = usage_rows()
    UsageRecord.objects.all().delete()
    MeteringCursor.objects.all().delete()

    # when two threads, each on its own connection, meter the same span at the same moment
    def meter() -> None:
        meter_usage(until=at(5))

    run_concurrently(meter, meter)  # fails on any error or a hang

    # then neither failed and the rows are exactly those of a single run
    assert usage_rows() == expected
    assert len(expected) == 48 + 30


@pytest.mark.django_db
def test_hours_an_incident_took_off_the_placement_are_not_billed(tenant, pool):
    # given a 10-hour reservation of 8 GPUs, and an outage from 12:00 to 15:00 that took all
    # its GPUs on the pool (the marketplace cut its placement and recorded the displacement)
    reservation = reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10, gpus=8)
    outage = incident_record(pool=pool, start=at(2, 12), end=at(2, 15), reason="PDU failure")
    displace(reservation, outage, lost=8)

    meter_usage(until=at(3))

    # then 12:00, 13:00 and 14:00 are not billed
    hours = list(UsageRecord.objects.order_by("hour").values_list("hour", flat=True))
    assert hours == [at(2, h) for h in (10, 11, 15, 16, 17, 18, 19)]


@pytest.mark.django_db
def test_gpus_an_incident_took_in_part_are_billed_for_what_stayed(tenant, pool):
    # given 16 GPUs, 8 of which an outage took from 12:00 to 14:00
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=6, gpus=16)
    outage = incident_record(pool=pool, start=at(2, 12), end=at(2, 14))
    displace(Reservation.objects.get(), outage, lost=8)

    meter_usage(until=at(3))

    # then those two hours bill 8 GPUs, the others 16
    assert list(UsageRecord.objects.order_by("hour").values_list("hour", "gpus", "amount")) == [
        (at(2, 10), 16, Decimal("48.0000")),
        (at(2, 11), 16, Decimal("48.0000")),
        (at(2, 12), 8, Decimal("24.0000")),
        (at(2, 13), 8, Decimal("24.0000")),
        (at(2, 14), 16, Decimal("48.0000")),
        (at(2, 15), 16, Decimal("48.0000")),
    ]


@pytest.mark.django_db
def test_an_incident_that_displaced_nobody_costs_nothing(tenant, pool, backup_pool):
    # given planned maintenance on the pool that left the reservation alone, and an outage of
    # another pool
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=4)
    incident_record(pool=pool, kind="maintenance", start=at(2, 10), end=at(2, 12))
    incident_record(pool=backup_pool, start=at(2), end=at(3))
    incident_record(pool=pool, start=at(2, 11), end=None)  # open, with spare GPUs to take

    meter_usage(until=at(3))

    assert UsageRecord.objects.count() == 4


@pytest.mark.django_db
def test_a_reservation_split_across_two_pools_meters_both_at_its_own_price(
    tenant, pool, backup_pool
):
    # given 16 GPUs at 3.0000 on the pool (cost 2.00), of which an outage moved 8 to the backup
    # pool (cost 1.50, list price 2.20) from 12:00 to 14:00
    reservation = reserve(tenant=tenant, pool=pool, start=at(2, 11), hours=4, gpus=16)
    outage = incident_record(pool=pool, start=at(2, 12), end=at(2, 14))
    displace(reservation, outage, moved=8, to=backup_pool)

    meter_usage(until=at(3))

    # then both pools are metered in the moved hours, each at the reservation's unit price and
    # at its own provider cost
    assert list(
        UsageRecord.objects.order_by("hour", "pool__slug").values_list(
            "hour",
            "pool__slug",
            "gpus",
            "unit_price",
            "amount",
            "cost_per_gpu_hour",
            "provider_cost",
        )
    ) == [
        (
            at(2, 11),
            "aws-h100",
            16,
            Decimal("3.0000"),
            Decimal("48.0000"),
            Decimal("2.0000"),
            Decimal("32.0000"),
        ),
        (
            at(2, 12),
            "aws-h100",
            8,
            Decimal("3.0000"),
            Decimal("24.0000"),
            Decimal("2.0000"),
            Decimal("16.0000"),
        ),
        (
            at(2, 12),
            "azure-h100-backup",
            8,
            Decimal("3.0000"),
            Decimal("24.0000"),
            Decimal("1.5000"),
            Decimal("12.0000"),
        ),
        (
            at(2, 13),
            "aws-h100",
            8,
            Decimal("3.0000"),
            Decimal("24.0000"),
            Decimal("2.0000"),
            Decimal("16.0000"),
        ),
        (
            at(2, 13),
            "azure-h100-backup",
            8,
            Decimal("3.0000"),
            Decimal("24.0000"),
            Decimal("1.5000"),
            Decimal("12.0000"),
        ),
        (
            at(2, 14),
            "aws-h100",
            16,
            Decimal("3.0000"),
            Decimal("48.0000"),
            Decimal("2.0000"),
            Decimal("32.0000"),
        ),
    ]
    assert set(UsageRecord.objects.values_list("reservation_id", "tenant_id", "currency")) == {
        (reservation.pk, tenant.pk, "USD")
    }


@pytest.mark.django_db
def test_a_day_of_scheduler_downtime_is_back_filled(tenant, pool):
    # given hourly metering that ran until 2 March 10:00 and then stopped for a day
    reserve(tenant=tenant, pool=pool, start=at(2, 0), hours=72)
    for hour in range(1, 11):
        meter_usage(until=at(2, hour))
    assert UsageRecord.objects.count() == 10

    # when the scheduler comes back on 3 March at 10:05
    result = meter_usage(until=at(3, 10) + timedelta(minutes=5))

    # then every missed hour is there, once
    assert result.usage_created == 24
    hours = list(UsageRecord.objects.order_by("hour").values_list("hour", flat=True))
    assert hours == [at(2) + i * HOUR for i in range(34)]


@pytest.mark.django_db
def test_a_quote_confirmed_just_after_a_run_still_gets_its_first_hour(tenant, pool):
    # given a quote for 09:00 still held when the 10:05 run looked
    quote = reserve(
        tenant=tenant,
        pool=pool,
        start=at(2, 9),
        hours=3,
        status=Reservation.Status.HELD,
        hold_expires_at=at(2, 10) + timedelta(minutes=10),
    )
    meter_usage(until=at(2, 10))
    assert UsageRecord.objects.count() == 0

    # when it is confirmed at 10:08 and the next run comes
    Reservation.objects.filter(pk=quote.pk).update(
        status=Reservation.Status.CONFIRMED, hold_expires_at=None
    )
    meter_usage(until=at(2, 11))

    # then 09:00 is billed too (the run looks back BILLING_METERING_LOOKBACK_HOURS)
    hours = list(UsageRecord.objects.order_by("hour").values_list("hour", flat=True))
    assert hours == [at(2, 9), at(2, 10)]


@pytest.mark.django_db
def test_held_and_expired_reservations_are_not_metered(tenant, pool):
    reserve(
        tenant=tenant,
        pool=pool,
        start=at(2, 9),
        hours=3,
        status=Reservation.Status.HELD,
        hold_expires_at=at(2, 9),
    )
    reserve(
        tenant=tenant,
        pool=pool,
        start=at(2, 9),
        hours=3,
        status=Reservation.Status.EXPIRED,
        capacity_until=at(2, 9),
        charge=Decimal("0.00"),
    )

    meter_usage(until=at(3))

    assert UsageRecord.objects.count() == 0


@pytest.mark.django_db
def test_a_cancelled_reservation_bills_its_delivered_hours_and_its_fee_once(tenant, pool):
    # given a 10-hour reservation cancelled at 12:20 (hours up to 13:00 delivered, fee 30.00)
    reservation = reserve(
        tenant=tenant,
        pool=pool,
        start=at(2, 10),
        hours=10,
        status=Reservation.Status.CANCELLED,
        capacity_until=at(2, 13),
        cancellation_fee=Decimal("30.00"),
        cancelled_at=at(2, 12) + timedelta(minutes=20),
        charge=Decimal("102.00"),
    )

    meter_usage(until=at(3))
    meter_usage(until=at(3, 1))

    assert UsageRecord.objects.count() == 3
    assert list(Charge.objects.values_list("reservation_id", "kind", "amount", "incurred_at")) == [
        (reservation.pk, "cancellation_fee", Decimal("30.00"), at(2, 12) + timedelta(minutes=20))
    ]


@pytest.mark.django_db
def test_a_cancellation_fee_is_charged_once_the_cancellation_has_happened_however_small(
    tenant, pool
):
    # given a cancellation with a fee of 0.50 at 12:20, and one with no fee
    small = reserve(
        tenant=tenant,
        pool=pool,
        start=at(4, 10),
        hours=10,
        status=Reservation.Status.CANCELLED,
        capacity_until=at(4, 10),
        cancellation_fee=Decimal("0.50"),
        cancelled_at=at(2, 12) + timedelta(minutes=20),
        charge=Decimal("0.50"),
    )
    reserve(
        tenant=tenant,
        pool=pool,
        start=at(5, 10),
        hours=10,
        status=Reservation.Status.CANCELLED,
        capacity_until=at(5, 10),
        cancelled_at=at(2, 9),
        charge=Decimal("0.00"),
    )

    # when metering runs up to 12:00, then up to 13:00
    before = meter_usage(until=at(2, 12))
    after = meter_usage(until=at(2, 13))

    # then the fee is charged by the run that covers 12:20, and the free one never
    assert (before.charges_created, after.charges_created) == (0, 1)
    assert list(Charge.objects.values_list("reservation_id", "amount")) == [
        (small.pk, Decimal("0.50"))
    ]


@pytest.mark.django_db
def test_the_portable_metering_path_writes_long_reservations_in_batches_once(tenant, pool):
    # given two reservations of 2,100 hours: each more rows than one batch of the portable path
    reserve(tenant=tenant, pool=pool, start=at(1), hours=2100)
    reserve(tenant=tenant, pool=pool, start=at(1), hours=2100, gpus=16)
    until = at(1) + 2100 * HOUR

    # when the portable path meters it twice, and the PostgreSQL path then once
    first = _meter_portable(until=until, low=None)
    again = _meter_portable(until=until, low=None)
    by_portable = every_column()
    UsageRecord.objects.all().delete()
    meter_usage(until=until)

    # then every hour was written once, as the PostgreSQL path writes it
    assert (first, again) == (4200, 0)
    assert every_column() == by_portable


def every_column() -> list[tuple]:
    return list(
        UsageRecord.objects.order_by("reservation_id", "hour").values_list(
            "reservation_id",
            "tenant_id",
            "pool_id",
            "hour",
            "gpus",
            "gpu_hours",
            "unit_price",
            "amount",
            "cost_per_gpu_hour",
            "provider_cost",
            "currency",
            "invoice_id",
        )
    )


@pytest.mark.django_db
@pytest.mark.parametrize("low", [None, at(2, 22)], ids=["from the start", "from a cursor"])
def test_the_portable_metering_path_writes_the_same_rows_as_the_postgresql_one(
    tenant, pool, backup_pool, low
):
    # given reservations of every kind (billed or not, one in euros)
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=30)
    reserve(tenant=tenant, pool=backup_pool, start=at(3, 5), hours=7, unit_price="2.1234")
    reserve(
        tenant=tenant,
        pool=pool,
        start=at(2, 20),
        hours=10,
        status=Reservation.Status.CANCELLED,
        capacity_until=at(2, 23),
    )
    reserve(tenant=tenant, pool=pool, start=at(2, 12), hours=4, currency="EUR", gpus=16)
    for status in (Reservation.Status.HELD, Reservation.Status.EXPIRED):
        reserve(
            tenant=tenant,
            pool=pool,
            start=at(2, 11),
            hours=5,
            status=status,
            hold_expires_at=at(1),
            capacity_until=at(2, 11) if status == Reservation.Status.EXPIRED else at(2, 16),
        )
    # an outage that took 8 of the first reservation's GPUs from 1:00 to 3:00 on 3 March and
    # moved them to the backup pool, and one that took the backup reservation's for 2 hours
    first = Reservation.objects.get(pool=pool, start=at(2, 10))
    displace(
        first, incident_record(pool=pool, start=at(3, 1), end=at(3, 3)), moved=8, to=backup_pool
    )
    backup = Reservation.objects.get(pool=backup_pool)
    displace(backup, incident_record(pool=backup_pool, start=at(3, 6), end=at(3, 8)), lost=8)
    meter_usage(until=at(3, 12))
    by_postgresql = every_column()
    if low is not None:
        by_postgresql = [row for row in by_postgresql if row[3] >= low]
    UsageRecord.objects.all().delete()

    # when the same span is metered by the portable (SQLite) path, twice
    assert _meter_portable(until=at(3, 12), low=low) == len(by_postgresql)
    assert _meter_portable(until=at(3, 12), low=low) == 0

    # then the rows are identical, to the last column
    assert len(by_postgresql) == (38 if low is None else 20)
    assert every_column() == by_postgresql


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["postgresql", "portable"])
def test_two_placements_on_one_pool_in_the_same_hour_are_one_record_of_both(
    tenant, pool, backup_pool, path
):
    # given 8 GPUs on the pool, 8 of which an incident on the backup pool sent back to it for
    # 2 hours after an earlier move: two placements of the reservation cover those hours
    reservation = reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=4, gpus=16)
    displace(
        reservation,
        incident_record(pool=pool, start=at(2, 10), end=at(2, 14)),
        moved=8,
        to=backup_pool,
    )
    back = incident_record(pool=backup_pool, start=at(2, 11), end=at(2, 13))
    displace(reservation, back, moved=8, to=pool)

    if path == "postgresql":
        meter_usage(until=at(3))
    else:
        _meter_portable(until=at(3), low=None)

    assert list(
        UsageRecord.objects.order_by("hour", "pool__slug").values_list(
            "hour", "pool__slug", "gpus", "amount", "provider_cost"
        )
    ) == [
        (at(2, 10), "aws-h100", 8, Decimal("24.0000"), Decimal("16.0000")),
        (at(2, 10), "azure-h100-backup", 8, Decimal("24.0000"), Decimal("12.0000")),
        (at(2, 11), "aws-h100", 16, Decimal("48.0000"), Decimal("32.0000")),
        (at(2, 12), "aws-h100", 16, Decimal("48.0000"), Decimal("32.0000")),
        (at(2, 13), "aws-h100", 8, Decimal("24.0000"), Decimal("16.0000")),
        (at(2, 13), "azure-h100-backup", 8, Decimal("24.0000"), Decimal("12.0000")),
    ]
