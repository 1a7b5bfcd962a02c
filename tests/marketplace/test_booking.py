"""The booking services' promises, one sentence each: capacity, windows, quotas, credit, prices,
quotes, cancellation, extension, lifecycle and the operator's changes to pools.

Time is moved with the services' ``now=`` argument; the default pool is 4 nodes of 8 GPUs
(32 GPUs) at 3.0000 per GPU-hour, and the price book and cancellation policy are the defaults
of the data migration (>= 168 h -10 %, >= 720 h -20 %; free with 24 h notice, else 50 %)."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from billing import credit
from capacity.errors import CapacityInUse, InsufficientCapacity, InvalidWindow
from capacity.models import CapacityPool, Incident, PoolHour
from capacity.services import incident_close, incident_open, pool_update
from core.timeutils import HOUR
from marketplace.errors import (
    CreditLimitExceeded,
    IdempotencyKeyReused,
    InvalidGpuCount,
    InvalidStateTransition,
    NoMatchingPool,
    QuotaExceeded,
    QuoteExpired,
    TenantSuspended,
)
from marketplace.models import PoolPrice, Reservation, Tenant
from marketplace.services import booking as svc
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.marketplace.conftest import MONDAY_9, NOW, booking
from tests.marketplace.test_concurrency import ledger_violations

pytestmark = pytest.mark.django_db

Status = Reservation.Status


@pytest.fixture(autouse=True)
def default_booking_settings(settings):
    """Pin the documented defaults so the exact values below do not depend on the environment."""
    settings.BOOKING_MAX_HOURS = 90 * 24
    settings.BOOKING_HORIZON_DAYS = 365
    settings.QUOTE_HOLD_MINUTES = 10


def book(tenant: Tenant, request: svc.BookingRequest, *, now: datetime = NOW) -> Reservation:
    reservation, _ = svc.reservation_create(
        tenant=tenant, request=request, fingerprint=request.fingerprint(), now=now
    )
    return reservation


def hold(tenant: Tenant, request: svc.BookingRequest, *, now: datetime = NOW) -> Reservation:
    quote, _ = svc.quote_create(
        tenant=tenant, request=request, fingerprint=request.fingerprint(), now=now
    )
    return quote


def confirm(tenant: Tenant, quote: Reservation, *, now: datetime) -> Reservation:
    reservation, _ = svc.quote_confirm(
        tenant=tenant, quote_id=quote.pk, fingerprint=str(quote.pk), now=now
    )
    return reservation


def cancel(tenant: Tenant, reservation: Reservation, *, now: datetime = NOW) -> Reservation:
    return svc.reservation_cancel(
        tenant=tenant, reservation_id=reservation.pk, cancelled_by="test", now=now
    )


def extend(
    tenant: Tenant, reservation: Reservation, new_end: datetime, *, now: datetime = NOW
) -> Reservation:
    extended, _ = svc.reservation_extend(
        tenant=tenant,
        reservation_id=reservation.pk,
        new_end=new_end,
        fingerprint=f"{reservation.pk}:{new_end.isoformat()}",
        now=now,
    )
    return extended


def booked(pool: CapacityPool) -> list[int]:
    return list(PoolHour.objects.filter(pool=pool).values_list("booked", flat=True))


def capacity(pool: CapacityPool) -> list[int]:
    return list(PoolHour.objects.filter(pool=pool).values_list("capacity", flat=True))


def at(hour: int, day: datetime = MONDAY_9) -> datetime:
    """Monday 2026-12-07 at ``hour``:00 UTC."""
    return day.replace(hour=hour)


def field_code(error: pytest.ExceptionInfo) -> tuple[str, str]:
    ((field, problems),) = error.value.fields.items()
    return field, problems[0]["code"]


# --- capacity: the peak inside the window counts, not the sum of overlapping bookings ------


def test_a_booking_fits_when_the_peak_fits_though_overlapping_bookings_sum_past_capacity(
    tenant, pool
):
    # given 16 of 32 GPUs booked 09-11 and another 16 booked 11-13
    book(tenant, booking(gpus=16, start=at(9), hours=2))
    book(tenant, booking(gpus=16, start=at(11), hours=2))

    # when 16 more are asked for 09-13: the three overlap for 48 GPUs, but at most 32 at once
    third = book(tenant, booking(gpus=16, start=at(9), hours=4))

    # then the booking succeeds and fills every hour exactly
    assert third.status == Status.CONFIRMED
    assert booked(pool) == [32, 32, 32, 32]
    assert ledger_violations() == []


def test_a_booking_is_refused_when_one_hour_of_its_window_lacks_gpus(tenant, pool):
    # given 24 of 32 GPUs booked 10-11 only
    book(tenant, booking(gpus=24, start=at(10), hours=1))

    # when 16 GPUs are asked for 09-13
    with pytest.raises(InsufficientCapacity) as error:
        book(tenant, booking(gpus=16, start=at(9), hours=4))

    # then it is refused, naming the 8 GPUs that are free all through, and nothing moved
    assert error.value.code == "insufficient_capacity"
    assert error.value.extra == {"available_gpus": 8}
    assert booked(pool) == [24]
    assert Reservation.objects.count() == 1


def test_the_last_free_gpus_can_be_booked_exactly(tenant, pool):
    # given 24 of 32 GPUs booked 09-13
    book(tenant, booking(gpus=24, start=at(9), hours=4))

    # when the remaining 8 are booked for the same hours, and then 8 more
    book(tenant, booking(gpus=8, start=at(9), hours=4))
    with pytest.raises(InsufficientCapacity):
        book(tenant, booking(gpus=8, start=at(12), hours=1))

    # then the pool is full and the last request was refused
    assert booked(pool) == [32, 32, 32, 32]


# --- whole nodes -------------------------------------------------------------------------------


def test_a_whole_node_pool_refuses_a_gpu_count_that_is_not_a_multiple_of_its_node(tenant, pool):
    # given a pool of 8-GPU nodes sold whole

    # when 12 GPUs are asked for
    with pytest.raises(InvalidGpuCount) as error:
        book(tenant, booking(gpus=12))

    # then the request is refused on the GPU count and nothing is booked
    assert field_code(error) == ("gpu_count", "not_whole_nodes")
    assert not PoolHour.objects.exists()


@pytest.mark.parametrize("gpus", [0, -8])
def test_a_booking_needs_at_least_one_gpu(tenant, pool, gpus):
    with pytest.raises(InvalidGpuCount) as error:
        book(tenant, booking(gpus=gpus))

    assert field_code(error) == ("gpu_count", "min_value")
    assert not PoolHour.objects.exists()


def test_a_pool_that_allows_partial_nodes_sells_single_gpus(tenant):
    # given a 32-GPU pool that sells single GPUs
    pool = CapacityPoolFactory(allow_partial_nodes=True)

    # when 12, then 19, then 1, then 1 more GPUs are booked for the same hours
    book(tenant, booking(gpus=12))
    book(tenant, booking(gpus=19))
    book(tenant, booking(gpus=1))
    with pytest.raises(InsufficientCapacity):
        book(tenant, booking(gpus=1))

    # then exactly 32 GPUs are booked
    assert booked(pool) == [32, 32, 32, 32]


def test_an_odd_gpu_count_goes_to_the_pool_selling_single_gpus_though_another_is_cheaper(tenant):
    # given a cheap pool of whole 8-GPU nodes and a dearer pool that sells single GPUs
    whole = CapacityPoolFactory(slug="whole", price_per_gpu_hour=Decimal("2.0000"))
    partial = CapacityPoolFactory(slug="partial", allow_partial_nodes=True)

    # when 12 GPUs and then 16 GPUs are booked
    twelve = book(tenant, booking(gpus=12))
    sixteen = book(tenant, booking(gpus=16))

    # then 12 land on the partial pool and 16 on the cheaper whole-node pool
    assert (twelve.pool, sixteen.pool) == (partial, whole)


# --- windows: whole UTC hours ------------------------------------------------------------------

PLUS_0530 = timezone(timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    ("start", "end", "field", "code"),
    [
        (at(9).replace(minute=30), at(13), "start", "not_whole_hour"),
        (at(9).replace(second=1), at(13), "start", "not_whole_hour"),
        (at(9).replace(microsecond=1), at(13), "start", "not_whole_hour"),
        (at(9), at(13).replace(minute=15), "end", "not_whole_hour"),
        # 15:00+05:30 is 09:30 UTC: a whole hour on the local clock only
        (datetime(2026, 12, 7, 15, tzinfo=PLUS_0530), at(13), "start", "not_whole_hour"),
        (datetime(2026, 12, 7, 9), at(13), "start", "naive_datetime"),
        (at(9), datetime(2026, 12, 7, 13), "end", "naive_datetime"),
        (at(9), at(9), "end", "too_short"),
        (at(9), at(8), "end", "too_short"),
        (NOW.replace(hour=7, minute=0), NOW.replace(hour=9, minute=0), "start", "in_past"),
        (at(9) - timedelta(days=7), at(13) - timedelta(days=7), "start", "in_past"),
        (at(9), at(9) + timedelta(hours=2161), "end", "too_long"),
        (
            datetime(2027, 12, 1, 8, tzinfo=UTC),
            datetime(2027, 12, 1, 9, tzinfo=UTC),
            "end",
            "beyond_horizon",
        ),
    ],
    ids=[
        "minute",
        "second",
        "microsecond",
        "end-minute",
        "half-hour-offset",
        "naive-start",
        "naive-end",
        "zero-hours",
        "backwards",
        "last-hour",
        "last-week",
        "2161-hours",
        "past-horizon",
    ],
)
def test_an_invalid_window_is_refused_naming_the_field(tenant, pool, start, end, field, code):
    # given a request for that window
    request = svc.BookingRequest(gpu_model="h100-sxm-80gb", gpu_count=8, start=start, end=end)

    # when it is booked or quoted
    for service in (svc.reservation_create, svc.quote_create):
        with pytest.raises(InvalidWindow) as error:
            service(tenant=tenant, request=request, fingerprint="f", now=NOW)

        # then it is refused as invalid_window on that field, and nothing is booked
        assert error.value.code == "invalid_window"
        assert field_code(error) == (field, code)
    assert not PoolHour.objects.exists()
    assert not Reservation.objects.exists()


def test_a_booking_may_start_in_the_hour_already_under_way(tenant, pool):
    # given it is 08:30 on 2026-12-01

    # when an hour is booked from 08:00
    reservation = book(tenant, booking(start=NOW.replace(minute=0), hours=1))

    # then it is accepted
    assert (reservation.start, reservation.hours) == (datetime(2026, 12, 1, 8, tzinfo=UTC), 1)


def test_the_longest_booking_is_90_days_and_the_furthest_end_is_a_year_ahead(tenant, pool):
    # given the defaults: at most 2160 hours, ending at most 365 days after now (08:30)

    # when a booking of exactly 2160 hours and one ending at 08:00 a year later are made
    longest = book(tenant, booking(start=at(9), hours=2160))
    furthest = book(tenant, booking(start=datetime(2027, 12, 1, 7, tzinfo=UTC), hours=1))

    # then both are accepted (2160 h earns the -20 % commitment discount)
    assert (longest.hours, longest.unit_price, longest.total_price) == (
        2160,
        Decimal("2.4000"),
        Decimal("41472.00"),
    )
    assert furthest.end == datetime(2027, 12, 1, 8, tzinfo=UTC)
    assert PoolHour.objects.count() == 2161


# --- DST is irrelevant: everything is counted in UTC hours -----------------------------------


@pytest.mark.parametrize(
    ("start", "hours"),
    [
        (datetime(2027, 3, 13, 12, tzinfo=UTC), 48),  # US clocks go forward on 2027-03-14
        (datetime(2027, 3, 27, 22, tzinfo=UTC), 6),  # EU clocks go forward on 2027-03-28
        (datetime(2027, 10, 30, 22, tzinfo=UTC), 6),  # EU clocks go back on 2027-10-31
        (datetime(2027, 11, 6, 12, tzinfo=UTC), 48),  # US clocks go back on 2027-11-07
    ],
    ids=["us-spring", "eu-spring", "eu-autumn", "us-autumn"],
)
def test_a_booking_across_a_dst_change_is_exactly_its_utc_hours(tenant, pool, start, hours):
    # when 8 GPUs are booked across the change
    reservation = book(tenant, booking(gpus=8, start=start, hours=hours))

    # then it has exactly that many hours, one ledger row per UTC hour, and that price
    rows = list(PoolHour.objects.values_list("hour", flat=True))
    assert reservation.hours == hours
    assert rows == [start + i * HOUR for i in range(hours)]
    assert booked(pool) == [8] * hours
    assert reservation.total_price == Decimal(3 * 8 * hours).quantize(Decimal("0.01"))


def test_a_window_written_with_utc_offsets_is_the_same_utc_instant(tenant, pool):
    # given 10:00+01:00 and 08:00-05:00, which are 09:00Z and 13:00Z
    start = datetime(2026, 12, 7, 10, tzinfo=timezone(timedelta(hours=1)))
    end = datetime(2026, 12, 7, 8, tzinfo=timezone(timedelta(hours=-5)))
    request = svc.BookingRequest(gpu_model="h100-sxm-80gb", gpu_count=24, start=start, end=end)

    # when 24 GPUs are booked with those offsets, then the rest in UTC
    reservation = book(tenant, request)
    reservation.refresh_from_db()
    with pytest.raises(InsufficientCapacity) as error:
        book(tenant, booking(gpus=16, start=at(9), hours=4))
    book(tenant, booking(gpus=8, start=at(9), hours=4))

    # then both used the same four UTC hours of the ledger, and the requests are the same
    assert (reservation.start, reservation.end, reservation.hours) == (at(9), at(13), 4)
    assert error.value.extra == {"available_gpus": 8}
    assert list(PoolHour.objects.values_list("hour", "booked")) == [
        (at(h), 32) for h in (9, 10, 11, 12)
    ]
    assert request.fingerprint() == booking(gpus=24, start=at(9), hours=4).fingerprint()


@pytest.mark.parametrize(
    ("local_start", "local_end", "utc_start"),
    [
        # New York, spring forward: 00:00 EST to 04:00 EDT is 3 hours, not 4
        (datetime(2027, 3, 14, 0), datetime(2027, 3, 14, 4), datetime(2027, 3, 14, 5, tzinfo=UTC)),
        # New York, fall back: 00:00 EDT to 02:00 EST is 3 hours, not 2
        (datetime(2027, 11, 7, 0), datetime(2027, 11, 7, 2), datetime(2027, 11, 7, 4, tzinfo=UTC)),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_a_window_in_a_local_time_zone_counts_elapsed_hours_not_wall_clock_hours(
    tenant, pool, local_start, local_end, utc_start
):
    # given a window written in America/New_York across its DST change
    new_york = ZoneInfo("America/New_York")
    request = svc.BookingRequest(
        gpu_model="h100-sxm-80gb",
        gpu_count=8,
        start=local_start.replace(tzinfo=new_york),
        end=local_end.replace(tzinfo=new_york),
    )

    # when it is booked
    reservation = book(tenant, request)

    # then it holds and charges the 3 hours that really elapse, each with its ledger row
    assert (reservation.start, reservation.hours) == (utc_start, 3)
    assert reservation.total_price == Decimal("72.00")
    assert list(PoolHour.objects.values_list("hour", flat=True)) == [
        utc_start + i * HOUR for i in range(3)
    ]
    assert ledger_violations() == []


# --- quotas and suspension ---------------------------------------------------------------------


def test_the_gpu_quota_counts_the_peak_of_overlapping_reservations(tenant):
    # given a tenant allowed 32 GPUs at once, on a 64-GPU pool, holding 16 09-11 and 16 11-13
    Tenant.objects.filter(pk=tenant.pk).update(max_gpus=32)
    CapacityPoolFactory(node_count=8)
    book(tenant, booking(gpus=16, start=at(9), hours=2))
    book(tenant, booking(gpus=16, start=at(11), hours=2))

    # when it asks for 16 more 09-13 (peak 32) and then 8 more 12-14 (peak 40)
    book(tenant, booking(gpus=16, start=at(9), hours=4))
    with pytest.raises(QuotaExceeded) as error:
        book(tenant, booking(gpus=8, start=at(12), hours=2))

    # then the first fits the quota and the second is refused with the figures
    assert error.value.code == "quota_exceeded"
    assert error.value.extra == {"quota": "max_gpus", "limit": 32, "in_use": 32}
    # and hours outside the window do not count
    book(tenant, booking(gpus=32, start=at(13), hours=2))


def test_held_quotes_count_against_the_gpu_quota_and_cancelled_bookings_do_not(tenant):
    # given a tenant allowed 32 GPUs at once holding a quote for 32
    Tenant.objects.filter(pk=tenant.pk).update(max_gpus=32)
    CapacityPoolFactory(node_count=8)
    quote = hold(tenant, booking(gpus=32))

    # when it asks for 8 more, then cancels the quote and asks again
    with pytest.raises(QuotaExceeded):
        book(tenant, booking(gpus=8))
    cancel(tenant, quote)
    again = book(tenant, booking(gpus=8))

    # then only the second request succeeded
    assert again.status == Status.CONFIRMED


def test_the_reservation_length_quota_refuses_longer_bookings_and_extensions(tenant, pool):
    # given a tenant limited to 24-hour reservations
    Tenant.objects.filter(pk=tenant.pk).update(max_reservation_hours=24)

    # when it books 25 hours, then 24 hours, then extends those to 25
    with pytest.raises(QuotaExceeded) as too_long:
        book(tenant, booking(hours=25))
    reservation = book(tenant, booking(hours=24))
    with pytest.raises(QuotaExceeded) as too_long_extension:
        extend(tenant, reservation, reservation.end + HOUR)

    # then 24 hours is the limit both ways
    assert too_long.value.extra == {"quota": "max_reservation_hours", "limit": 24}
    assert too_long_extension.value.extra == {"quota": "max_reservation_hours", "limit": 24}
    assert booked(pool) == [8] * 24


def test_a_suspended_tenant_can_neither_book_nor_quote_nor_extend(tenant, pool):
    # given a tenant with a reservation, then suspended
    reservation = book(tenant, booking(gpus=8))
    Tenant.objects.filter(pk=tenant.pk).update(status=Tenant.Status.SUSPENDED)

    # when it books, quotes or extends, then each is refused as tenant_suspended
    with pytest.raises(TenantSuspended):
        book(tenant, booking(gpus=8, start=at(14)))
    with pytest.raises(TenantSuspended):
        hold(tenant, booking(gpus=8, start=at(14)))
    with pytest.raises(TenantSuspended) as error:
        extend(tenant, reservation, at(15))

    # then nothing more is booked
    assert error.value.code == "tenant_suspended"
    assert booked(pool) == [8, 8, 8, 8]


# --- credit ------------------------------------------------------------------------------------


@pytest.fixture
def tenant_with_100_credit(db) -> Tenant:
    return TenantFactory(credit_limit=Decimal("100.00"))


def test_a_booking_is_refused_when_it_costs_more_than_the_credit_left(tenant_with_100_credit, pool):
    tenant = tenant_with_100_credit
    # given a tenant with 100.00 of credit and a confirmed booking of 96.00 (8 GPUs x 4 h x 3)
    first = book(tenant, booking(gpus=8, start=at(9), hours=4))

    # when it books one more hour of 8 GPUs (24.00)
    with pytest.raises(CreditLimitExceeded) as error:
        book(tenant, booking(gpus=8, start=at(14), hours=1))

    # then it is refused with the figures, the confirmed booking counts against the credit,
    # and the refused hours hold no GPUs
    assert first.total_price == Decimal("96.00")
    assert error.value.code == "credit_limit_exceeded"
    assert error.value.extra == {"available_credit": "4.00", "amount": "24.00"}
    assert credit.credit_available(tenant=tenant) == Decimal("4.00")
    assert booked(pool) == [8, 8, 8, 8]
    assert ledger_violations() == []


def test_cancelling_with_notice_gives_the_credit_back(tenant_with_100_credit, pool):
    tenant = tenant_with_100_credit
    # given a booking of 96.00 against 100.00 of credit, six days ahead
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))

    # when it is cancelled with more than 24 hours' notice
    cancel(tenant, reservation)

    # then all 100.00 is available again
    assert credit.credit_available(tenant=tenant) == Decimal("100.00")


def test_cancelling_late_gives_the_credit_back_minus_the_fee(tenant_with_100_credit, pool):
    tenant = tenant_with_100_credit
    # given a booking of 96.00 against 100.00 of credit
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))

    # when it is cancelled two hours before it starts (fee: 50 % of 96.00)
    cancel(tenant, reservation, now=at(7))

    # then 100.00 - 48.00 is available
    assert credit.credit_available(tenant=tenant) == Decimal("52.00")


def test_a_held_quote_counts_against_credit_until_it_expires(tenant_with_100_credit, pool):
    tenant = tenant_with_100_credit
    # given a quote of 96.00 held against 100.00 of credit
    hold(tenant, booking(gpus=8, start=at(9), hours=4))
    assert credit.credit_available(tenant=tenant) == Decimal("4.00")

    # when the hold lapses and is swept
    svc.holds_expire(now=NOW + timedelta(minutes=10))

    # then the credit is back
    assert credit.credit_available(tenant=tenant) == Decimal("100.00")


# --- prices ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hours", "unit", "total"),
    [
        (167, "3.0000", "4008.00"),
        (168, "2.7000", "3628.80"),  # >= 168 h: -10 %
        (719, "2.7000", "15530.40"),
        (720, "2.4000", "13824.00"),  # >= 720 h: -20 %
    ],
)
def test_longer_reservations_earn_the_commitment_discount(tenant, pool, hours, unit, total):
    # when 8 GPUs are booked at list price 3.0000 for that many hours
    reservation = book(tenant, booking(gpus=8, hours=hours))

    # then the unit price and total are locked at the discounted rate
    assert reservation.list_price_per_gpu_hour == Decimal("3.0000")
    assert (reservation.unit_price, reservation.total_price) == (Decimal(unit), Decimal(total))
    assert reservation.charge == reservation.total_price


@pytest.mark.parametrize(
    ("hours", "unit", "total"),
    [(4, "2.5500", "81.60"), (168, "2.2950", "3084.48")],
)
def test_the_tenant_discount_applies_on_top_of_the_commitment_discount(pool, hours, unit, total):
    # given a tenant with a negotiated 15 % discount
    tenant = TenantFactory(discount_percent=Decimal("15.00"))

    # when it books 8 GPUs at 3.0000 list price
    reservation = book(tenant, booking(gpus=8, hours=hours))

    # then 3.0000 x 0.85 (x 0.90 from 168 h) per GPU-hour
    assert (reservation.unit_price, reservation.total_price) == (Decimal(unit), Decimal(total))


def test_totals_are_rounded_half_up_to_the_cent(tenant):
    # given a pool selling single GPUs at 1.0050 per GPU-hour
    CapacityPoolFactory(allow_partial_nodes=True, price_per_gpu_hour=Decimal("1.0050"))

    # when one GPU is booked for one hour (1.005)
    reservation = book(tenant, booking(gpus=1, hours=1))

    # then the total is 1.01 (half up), not 1.00 (half even)
    assert reservation.total_price == Decimal("1.01")


def test_unit_prices_are_rounded_half_up_to_four_decimals(pool):
    # given a 1.0001 list price and a 50 % tenant discount (0.50005)
    PoolPrice.objects.filter(pool=pool).update(price_per_gpu_hour=Decimal("1.0001"))
    tenant = TenantFactory(discount_percent=Decimal("50.00"))

    # when 8 GPUs are booked for 4 hours
    reservation = book(tenant, booking(gpus=8, hours=4))

    # then the unit price is 0.5001 and the total 0.5001 x 32 = 16.0032 -> 16.00
    assert (reservation.unit_price, reservation.total_price) == (
        Decimal("0.5001"),
        Decimal("16.00"),
    )


def test_the_cheapest_pool_that_fits_is_chosen(tenant):
    # given three 32-GPU pools at 3.00, 2.50 and 4.00 per GPU-hour
    CapacityPoolFactory(slug="p-300", price_per_gpu_hour=Decimal("3.0000"))
    CapacityPoolFactory(slug="p-250", price_per_gpu_hour=Decimal("2.5000"))
    CapacityPoolFactory(slug="p-400", price_per_gpu_hour=Decimal("4.0000"))

    # when 32 GPUs are booked three times for the same hours
    pools = [book(tenant, booking(gpus=32)).pool.slug for _ in range(3)]

    # then they fill the pools cheapest first
    assert pools == ["p-250", "p-300", "p-400"]


def test_primary_pools_come_before_backup_pools_at_equal_price(tenant):
    # given a backup pool and a primary pool at the same price (the backup's slug sorts first)
    CapacityPoolFactory(slug="a-backup", tier=CapacityPool.Tier.BACKUP)
    CapacityPoolFactory(slug="z-primary", tier=CapacityPool.Tier.PRIMARY)

    # when 32 GPUs are booked twice for the same hours
    pools = [book(tenant, booking(gpus=32)).pool.slug for _ in range(2)]

    # then the primary fills first
    assert pools == ["z-primary", "a-backup"]


def test_a_price_limit_leaves_out_pools_that_cost_more(tenant):
    # given a full pool at 2.50 and a free one at 3.00
    cheap = CapacityPoolFactory(slug="cheap", price_per_gpu_hour=Decimal("2.5000"))
    CapacityPoolFactory(slug="dear", price_per_gpu_hour=Decimal("3.0000"))
    book(tenant, booking(gpus=32, pool="cheap"))

    # when 8 GPUs are asked for at no more than 2.75, for 4 hours and then for 168 hours
    with pytest.raises(InsufficientCapacity) as error:
        book(tenant, booking(gpus=8, max_unit_price=Decimal("2.75")))
    week = book(tenant, booking(gpus=8, hours=168, max_unit_price=Decimal("2.75")))

    # then 4 hours at 3.00 is over the limit, while 168 hours at 3.00 less 10 % (2.70) is not
    assert "price limit" in error.value.detail
    assert (week.pool.slug, week.unit_price) == ("dear", Decimal("2.7000"))
    assert booked(cheap) == [32, 32, 32, 32]


# --- quotes ------------------------------------------------------------------------------------


def test_a_quote_holds_the_capacity_and_confirming_it_in_time_cannot_fail(tenant, pool):
    # given a quote for all 32 GPUs, made at 08:30
    quote = hold(tenant, booking(gpus=32))

    # when someone else asks for GPUs, and the quote is confirmed a second before it expires
    with pytest.raises(InsufficientCapacity):
        book(TenantFactory(), booking(gpus=8))
    confirmed = confirm(tenant, quote, now=NOW + timedelta(minutes=10) - timedelta(seconds=1))

    # then the quote held for 10 minutes, and confirming moved no capacity
    assert quote.hold_expires_at == NOW + timedelta(minutes=10)
    assert (confirmed.pk, confirmed.status) == (quote.pk, Status.CONFIRMED)
    assert confirmed.hold_expires_at is None
    assert booked(pool) == [32, 32, 32, 32]


def test_confirming_a_quote_after_it_expired_is_refused_and_releases_the_capacity(tenant, pool):
    # given a quote for 32 GPUs that expires at 08:40
    quote = hold(tenant, booking(gpus=32))

    # when it is confirmed at 08:40, before any sweeper ran
    with pytest.raises(QuoteExpired) as error:
        confirm(tenant, quote, now=NOW + timedelta(minutes=10))

    # then quote_expired, the hold is expired and its GPUs are free again
    quote.refresh_from_db()
    assert error.value.code == "quote_expired"
    assert (quote.status, quote.charge) == (Status.EXPIRED, Decimal("0.00"))
    assert booked(pool) == [0, 0, 0, 0]
    assert ledger_violations() == []


def test_the_sweeper_releases_lapsed_holds_only(tenant, pool):
    # given a hold made at 08:30 (expires 08:40) and one made at 08:35 (expires 08:45)
    early = hold(tenant, booking(gpus=8, start=at(9), hours=2))
    late = hold(tenant, booking(gpus=16, start=at(10), hours=2), now=NOW + timedelta(minutes=5))

    # when the sweeper runs at 08:42, and again
    first_run = svc.holds_expire(now=NOW + timedelta(minutes=12))
    second_run = svc.holds_expire(now=NOW + timedelta(minutes=12))

    # then only the first hold is released, once
    early.refresh_from_db()
    late.refresh_from_db()
    assert (first_run, second_run) == (1, 0)
    assert (early.status, late.status) == (Status.EXPIRED, Status.HELD)
    assert booked(pool) == [0, 16, 16]
    assert ledger_violations() == []


def test_a_quote_cannot_be_confirmed_twice_with_different_keys(tenant, pool):
    # given a confirmed quote
    quote = hold(tenant, booking(gpus=8))
    confirm(tenant, quote, now=NOW)

    # when it is confirmed again under another idempotency key
    with pytest.raises(InvalidStateTransition) as error:
        svc.quote_confirm(tenant=tenant, quote_id=quote.pk, fingerprint="other", now=NOW)

    # then it is refused as already confirmed
    assert error.value.extra == {"status": Status.CONFIRMED}


# --- idempotency -------------------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_return_the_same_reservation(tenant, pool):
    request = booking(gpus=8)

    first = svc.reservation_create(
        tenant=tenant,
        request=request,
        idempotency_key="k1",
        fingerprint=request.fingerprint(),
        now=NOW,
    )
    again = svc.reservation_create(
        tenant=tenant,
        request=request,
        idempotency_key="k1",
        fingerprint=request.fingerprint(),
        now=NOW,
    )

    assert (first[1], again[1]) == (False, True)
    assert again[0].pk == first[0].pk
    assert booked(pool) == [8, 8, 8, 8]


def test_the_same_idempotency_key_with_another_body_is_refused(tenant, pool):
    first, other = booking(gpus=8), booking(gpus=16)
    svc.reservation_create(
        tenant=tenant, request=first, idempotency_key="k1", fingerprint=first.fingerprint(), now=NOW
    )

    with pytest.raises(IdempotencyKeyReused):
        svc.reservation_create(
            tenant=tenant,
            request=other,
            idempotency_key="k1",
            fingerprint=other.fingerprint(),
            now=NOW,
        )

    assert booked(pool) == [8, 8, 8, 8]


# --- cancellation ------------------------------------------------------------------------------


def test_cancelling_with_24_hours_notice_is_free_and_releases_every_hour(tenant, pool):
    # given 8 GPUs 09-13 for 96.00
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))

    # when it is cancelled exactly 24 hours before it starts
    cancelled = cancel(tenant, reservation, now=at(9) - timedelta(hours=24))

    # then nothing is charged and the GPUs are free
    assert cancelled.status == Status.CANCELLED
    assert (cancelled.cancellation_fee, cancelled.charge) == (Decimal("0.00"), Decimal("0.00"))
    assert cancelled.capacity_until == at(9)
    assert booked(pool) == [0, 0, 0, 0]
    assert ledger_violations() == []


@pytest.mark.parametrize(
    "notice", [timedelta(hours=23, minutes=59), timedelta(hours=2), timedelta(0)]
)
def test_cancelling_with_less_than_24_hours_notice_costs_half_the_remaining_hours(
    tenant, pool, notice
):
    # given 8 GPUs 09-13 for 96.00
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))

    # when it is cancelled with less than 24 hours' notice
    cancelled = cancel(tenant, reservation, now=at(9) - notice)

    # then the fee is 50 % of 96.00 and all four hours are released
    assert (cancelled.cancellation_fee, cancelled.charge) == (Decimal("48.00"), Decimal("48.00"))
    assert booked(pool) == [0, 0, 0, 0]


def test_cancelling_after_the_start_charges_delivered_hours_and_releases_from_the_next_hour(
    tenant, pool
):
    # given 8 GPUs 09-13 at 3.00 (24.00 an hour)
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))

    # when it is cancelled at 10:30
    cancelled = cancel(tenant, reservation, now=at(10).replace(minute=30))

    # then 09-11 are delivered (48.00) plus 50 % of 11-13 (24.00), and 11-13 are free again
    assert cancelled.capacity_until == at(11)
    assert (cancelled.cancellation_fee, cancelled.charge) == (Decimal("24.00"), Decimal("72.00"))
    assert booked(pool) == [8, 8, 0, 0]
    assert ledger_violations() == []


def test_cancelling_twice_changes_nothing_more(tenant, pool):
    reservation = book(tenant, booking(gpus=8))
    first = cancel(tenant, reservation, now=at(7))

    second = cancel(tenant, reservation, now=at(8))

    assert (second.cancelled_at, second.charge) == (first.cancelled_at, Decimal("48.00"))
    assert booked(pool) == [0, 0, 0, 0]


def test_cancelling_a_quote_is_free(tenant, pool):
    quote = hold(tenant, booking(gpus=8))

    cancelled = cancel(tenant, quote)

    assert (cancelled.status, cancelled.charge) == (Status.CANCELLED, Decimal("0.00"))
    assert booked(pool) == [0, 0, 0, 0]


def test_a_finished_reservation_cannot_be_cancelled(tenant, pool):
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))

    with pytest.raises(InvalidStateTransition):
        cancel(tenant, reservation, now=at(13))

    assert booked(pool) == [8, 8, 8, 8]


# --- extension ---------------------------------------------------------------------------------


def test_extending_into_free_hours_claims_them_at_the_locked_unit_price(tenant, pool):
    # given 8 GPUs 09-13 at 3.00, after which the pool's list price rises to 5.00
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))
    PoolPrice.objects.filter(pool=pool, currency="USD").update(price_per_gpu_hour=Decimal("5"))

    # when it is extended to 15:00
    extended = extend(tenant, reservation, at(15))

    # then it holds 6 hours at the 3.00 it was booked at
    assert (extended.end, extended.capacity_until) == (at(15), at(15))
    assert (extended.unit_price, extended.total_price) == (Decimal("3.0000"), Decimal("144.00"))
    assert booked(pool) == [8] * 6
    assert ledger_violations() == []


def test_extending_into_a_full_hour_is_refused_and_changes_nothing(tenant, pool):
    # given 8 GPUs 09-13 and another tenant's 32 GPUs 14-15
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))
    book(TenantFactory(), booking(gpus=32, start=at(14), hours=1))
    before = list(PoolHour.objects.values_list("hour", "booked"))

    # when the first is extended to 15:00
    with pytest.raises(InsufficientCapacity) as error:
        extend(tenant, reservation, at(15))

    # then insufficient_capacity, and the reservation and the ledger are as they were
    reservation.refresh_from_db()
    assert error.value.extra == {"available_gpus": 0}
    assert (reservation.end, reservation.total_price) == (at(13), Decimal("96.00"))
    assert list(PoolHour.objects.values_list("hour", "booked")) == before


def test_an_extension_must_end_later_on_a_whole_utc_hour(tenant, pool):
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))

    for new_end, code in [
        (at(13), "not_later"),
        (at(14).replace(minute=30), "not_whole_hour"),
        (datetime(2026, 12, 7, 14), "not_whole_hour"),  # no offset
        (datetime(2026, 12, 7, 20, tzinfo=PLUS_0530), "not_whole_hour"),  # 14:30Z
    ]:
        with pytest.raises(InvalidWindow) as error:
            extend(tenant, reservation, new_end)
        assert field_code(error) == ("end", code)

    assert booked(pool) == [8, 8, 8, 8]


def test_a_reservation_on_a_draining_pool_cannot_be_extended(tenant, pool):
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))
    pool_update(pool=pool, status=CapacityPool.Status.DRAINING, now=NOW)

    with pytest.raises(InvalidStateTransition):
        extend(tenant, reservation, at(15))

    assert booked(pool) == [8, 8, 8, 8]


# --- lifecycle ---------------------------------------------------------------------------------


def test_the_lifecycle_activates_at_start_completes_at_end_and_running_twice_does_nothing(
    tenant, pool
):
    # given a confirmed reservation 09-13
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))

    def advance(now: datetime) -> tuple[dict[str, int], str]:
        counts = svc.reservations_advance(now=now)
        reservation.refresh_from_db()
        return counts, reservation.status

    # when the lifecycle runs before, at and after the start, and at and after the end
    none = {"activated": 0, "completed": 0, "ending_soon": 0, "expired": 0}
    assert advance(at(8).replace(minute=59)) == (none, Status.CONFIRMED)
    assert advance(at(9)) == ({**none, "activated": 1}, Status.ACTIVE)
    assert advance(at(9)) == (none, Status.ACTIVE)
    assert advance(at(11).replace(minute=59)) == (none, Status.ACTIVE)
    assert advance(at(12)) == ({**none, "ending_soon": 1}, Status.ACTIVE)  # 1 h lead
    assert advance(at(12)) == (none, Status.ACTIVE)
    assert advance(at(13)) == ({**none, "completed": 1}, Status.COMPLETED)
    assert advance(at(13)) == (none, Status.COMPLETED)

    # then the delivered hours stay on the ledger
    assert booked(pool) == [8, 8, 8, 8]
    assert ledger_violations() == []


def test_a_reservation_whose_window_passed_unseen_goes_straight_to_completed(tenant, pool):
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))

    counts = svc.reservations_advance(now=at(14))

    reservation.refresh_from_db()
    assert counts == {"activated": 0, "completed": 1, "ending_soon": 0, "expired": 0}
    assert reservation.status == Status.COMPLETED


def test_the_lifecycle_expires_lapsed_holds(tenant, pool):
    quote = hold(tenant, booking(gpus=8))

    counts = svc.reservations_advance(now=NOW + timedelta(minutes=10))

    quote.refresh_from_db()
    assert counts == {"activated": 0, "completed": 0, "ending_soon": 0, "expired": 1}
    assert quote.status == Status.EXPIRED
    assert booked(pool) == [0, 0, 0, 0]


# --- the operator's changes to pools -----------------------------------------------------------


def test_a_draining_pool_takes_no_new_bookings_but_keeps_its_reservations(tenant, pool):
    # given a reservation on a pool that then starts draining, and another active pool
    reservation = book(tenant, booking(gpus=8))
    pool_update(pool=pool, status=CapacityPool.Status.DRAINING, now=NOW)

    # when a booking is asked for on the draining pool, then anywhere
    with pytest.raises(NoMatchingPool):
        book(tenant, booking(gpus=8, pool="pool-a"))
    other = CapacityPoolFactory(slug="other", price_per_gpu_hour=Decimal("9.0000"))
    elsewhere = book(tenant, booking(gpus=8))

    # then only the active pool (though dearer) takes it; the old reservation stands
    reservation.refresh_from_db()
    assert elsewhere.pool == other
    assert reservation.status == Status.CONFIRMED
    assert booked(pool) == [8, 8, 8, 8]


def test_planned_maintenance_reduces_what_can_be_booked(tenant, pool):
    # given 16 of 32 GPUs out for maintenance 10-12
    incident_open(
        pool=pool, kind=Incident.Kind.MAINTENANCE, start=at(10), end=at(12), gpus=16, now=NOW
    )

    # when 24 and then 16 GPUs are asked for 09-13
    with pytest.raises(InsufficientCapacity) as error:
        book(tenant, booking(gpus=24, start=at(9), hours=4))
    book(tenant, booking(gpus=16, start=at(9), hours=4))

    # then only 16 fit
    assert error.value.extra == {"available_gpus": 16}
    assert capacity(pool) == [32, 16, 16, 32]
    assert booked(pool) == [16, 16, 16, 16]
    assert ledger_violations() == []


def test_an_incident_over_booked_gpus_is_recorded_and_blocks_new_bookings_there(tenant, pool):
    # given 24 of 32 GPUs booked 09-13
    book(tenant, booking(gpus=24, start=at(9), hours=4))

    # when 16 GPUs are taken out 11-12 at the capacity level (before anything is moved)
    incident = incident_open(
        pool=pool, kind=Incident.Kind.OUTAGE, start=at(11), end=at(12), gpus=16, now=NOW
    )

    # then it is recorded; the hour shows 8 GPUs in excess and sells nothing
    assert list(Incident.objects.all()) == [incident]
    assert capacity(pool) == [32, 32, 16, 32]
    assert list(PoolHour.objects.filter(pool=pool).values_list("excess", flat=True)) == [0, 0, 8, 0]
    with pytest.raises(InsufficientCapacity):
        book(tenant, booking(gpus=8, start=at(11), hours=1))
    # and closing it before it begins gives the GPUs back
    incident_close(incident=incident, now=NOW)
    assert capacity(pool) == [32, 32, 32, 32]
    assert list(PoolHour.objects.filter(pool=pool).values_list("excess", flat=True)) == [0] * 4
    assert ledger_violations() == []


def test_shrinking_a_pool_below_what_is_booked_is_refused(tenant, pool):
    # given 24 of 32 GPUs booked (4 nodes of 8)
    book(tenant, booking(gpus=24, start=at(9), hours=4))

    # when the pool is cut to 2 nodes, then to 3
    with pytest.raises(CapacityInUse):
        pool_update(pool=pool, node_count=2, now=NOW)
    pool.refresh_from_db()
    assert pool.node_count == 4
    pool_update(pool=pool, node_count=3, now=NOW)

    # then only the second change is made, and the ledger follows it
    pool.refresh_from_db()
    assert (pool.node_count, pool.total_gpus) == (3, 24)
    assert capacity(pool) == [24, 24, 24, 24]
    assert ledger_violations() == []
