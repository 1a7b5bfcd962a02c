"""Availability and earliest-window search, at the selector: which pools are offered, at which
price, and where the first window that fits begins."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from core.timeutils import HOUR
from marketplace import selectors
from marketplace.models import Tenant
from marketplace.selectors import PoolFilter
from marketplace.services import booking as svc
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.marketplace.conftest import MONDAY_9, NOW, booking

pytestmark = pytest.mark.django_db

H100 = PoolFilter(gpu_model="h100-sxm-80gb")
TOKYO = timezone(timedelta(hours=9))


def book(tenant: Tenant, request: svc.BookingRequest) -> None:
    svc.reservation_create(
        tenant=tenant, request=request, fingerprint=request.fingerprint(), now=NOW
    )


@pytest.fixture
def tenant(db) -> Tenant:
    return TenantFactory()


def offered(windows) -> list[tuple]:
    return [(w.pool.slug, w.start, w.available_gpus, w.unit_price, w.total_price) for w in windows]


def test_search_skips_pools_that_cannot_take_the_request_and_goes_on_to_those_that_can(tenant):
    # given, cheapest first: a pool of whole 8-GPU nodes, a pool dearer than the price limit,
    # and two that fit (one of them with single GPUs)
    CapacityPoolFactory(slug="a-nodes", price_per_gpu_hour=Decimal("1.00"))
    CapacityPoolFactory(slug="b-dear", allow_partial_nodes=True, price_per_gpu_hour="9.00")
    CapacityPoolFactory(slug="c-fits", allow_partial_nodes=True, price_per_gpu_hour="2.00")
    CapacityPoolFactory(slug="d-fits", allow_partial_nodes=True, price_per_gpu_hour="2.50")

    # when 4 GPUs are searched for, at most 5.00 a GPU-hour
    found = selectors.availability_search(
        tenant=tenant,
        criteria=H100,
        gpu_count=4,
        start=MONDAY_9,
        end=MONDAY_9 + 2 * HOUR,
        max_unit_price=Decimal("5.00"),
    )
    earliest = selectors.earliest_windows(
        tenant=tenant,
        criteria=H100,
        gpu_count=4,
        duration_hours=2,
        not_before=MONDAY_9,
        not_after=MONDAY_9 + 24 * HOUR,
        max_unit_price=Decimal("5.00"),
    )

    # then both offer the two pools that fit, cheapest first
    assert offered(found) == [
        ("c-fits", MONDAY_9, 32, Decimal("2.0000"), Decimal("16.00")),
        ("d-fits", MONDAY_9, 32, Decimal("2.5000"), Decimal("20.00")),
    ]
    assert offered(earliest) == offered(found)


def test_search_prices_long_windows_with_the_commitment_discount(tenant):
    # given one pool at 3.00 (the price book gives 10 % off from 168 hours)
    CapacityPoolFactory(slug="pool-a")

    # when a week is searched for
    found = selectors.availability_search(
        tenant=tenant, criteria=H100, gpu_count=8, start=MONDAY_9, end=MONDAY_9 + 168 * HOUR
    )
    earliest = selectors.earliest_windows(
        tenant=tenant,
        criteria=H100,
        gpu_count=8,
        duration_hours=168,
        not_before=MONDAY_9,
        not_after=MONDAY_9 + 200 * HOUR,
    )

    # then both quote 2.70 a GPU-hour: 8 x 168 x 2.70
    assert offered(found) == [("pool-a", MONDAY_9, 32, Decimal("2.7000"), Decimal("3628.80"))]
    assert offered(earliest) == offered(found)


def test_a_price_limit_equal_to_the_price_keeps_the_offer(tenant):
    CapacityPoolFactory(slug="pool-a")

    earliest = selectors.earliest_windows(
        tenant=tenant,
        criteria=H100,
        gpu_count=8,
        duration_hours=2,
        not_before=MONDAY_9,
        not_after=MONDAY_9 + 4 * HOUR,
        max_unit_price=Decimal("3.0000"),
    )

    assert [w.pool.slug for w in earliest] == ["pool-a"]


def test_the_earliest_window_starts_where_exactly_enough_gpus_are_free_for_long_enough(tenant):
    # given a 32-GPU pool with 24 booked 09-11 and 16 booked 12-13 (8, 32, 16 free after)
    pool = CapacityPoolFactory(slug="pool-a")
    other = TenantFactory()
    book(other, booking(gpus=24, start=MONDAY_9, hours=2))
    book(other, booking(gpus=16, start=MONDAY_9 + 3 * HOUR, hours=1))

    def first_start(gpus: int, hours: int) -> datetime | None:
        windows = selectors.earliest_windows(
            tenant=tenant,
            criteria=H100,
            gpu_count=gpus,
            duration_hours=hours,
            not_before=MONDAY_9,
            not_after=MONDAY_9 + 6 * HOUR,
        )
        return windows[0].start if windows else None

    # then 8 GPUs fit at once (exactly 8 free), 16 GPUs for 3 hours from 11:00 (16 free at
    # 12:00 is just enough), 24 GPUs for 2 hours from 13:00, and 32 GPUs for 4 hours nowhere
    assert first_start(8, 6) == MONDAY_9
    assert first_start(16, 3) == MONDAY_9 + 2 * HOUR
    assert first_start(24, 2) == MONDAY_9 + 4 * HOUR
    assert first_start(32, 4) is None
    assert first_start(32, 2) == MONDAY_9 + 4 * HOUR
    assert pool.hours.count() == 3


def test_earliest_windows_gives_five_by_default(tenant):
    for n in range(7):
        CapacityPoolFactory(slug=f"pool-{n}")

    windows = selectors.earliest_windows(
        tenant=tenant,
        criteria=H100,
        gpu_count=8,
        duration_hours=1,
        not_before=MONDAY_9,
        not_after=MONDAY_9 + 2 * HOUR,
    )

    assert [w.pool.slug for w in windows] == [f"pool-{n}" for n in range(5)]


def test_search_reads_any_utc_offset_as_the_same_utc_hours(tenant):
    CapacityPoolFactory(slug="pool-a")
    start = MONDAY_9.astimezone(TOKYO)  # 18:00+09:00

    found = selectors.availability_search(
        tenant=tenant, criteria=H100, gpu_count=8, start=start, end=start + 2 * HOUR
    )
    earliest = selectors.earliest_windows(
        tenant=tenant,
        criteria=H100,
        gpu_count=8,
        duration_hours=2,
        not_before=start,
        not_after=(start + 3 * HOUR),
    )

    assert [(w.start, w.end) for w in found] == [(MONDAY_9, MONDAY_9 + 2 * HOUR)]
    assert [(w.start, w.end) for w in earliest] == [(MONDAY_9, MONDAY_9 + 2 * HOUR)]
    assert found[0].start.tzinfo == UTC
    assert earliest[0].start.tzinfo == UTC


def test_an_earliest_window_fits_inside_the_span_up_to_its_last_hour(tenant):
    # given a pool full at 09:00 and free at 10:00, searched over 09:00-11:00
    CapacityPoolFactory(slug="pool-a")
    book(TenantFactory(), booking(gpus=32, start=MONDAY_9, hours=1))

    def starts(hours: int) -> list[datetime]:
        return [
            w.start
            for w in selectors.earliest_windows(
                tenant=tenant,
                criteria=H100,
                gpu_count=8,
                duration_hours=hours,
                not_before=MONDAY_9,
                not_after=MONDAY_9 + 2 * HOUR,
            )
        ]

    # then one hour fits in the span's last hour, and two hours fit nowhere inside it
    assert starts(1) == [MONDAY_9 + HOUR]
    assert starts(2) == []
