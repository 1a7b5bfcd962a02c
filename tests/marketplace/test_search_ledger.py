"""The searches read the ledger set-based: their answers are those of reading every pool hour
by hour (``capacity.selectors.free_by_hour``), over pools whose capacity is steady, varies
with an incident or a contract's end, or is too small but in ledger rows."""

from datetime import datetime, timedelta

import pytest

from capacity import selectors as capacity_selectors
from capacity.models import Incident
from capacity.services import incident_open
from core.timeutils import HOUR
from marketplace import selectors
from marketplace.models import Tenant
from marketplace.selectors import PoolFilter
from marketplace.services import booking as svc
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.marketplace.conftest import MONDAY_9, NOW, booking

pytestmark = pytest.mark.django_db

H100 = PoolFilter(gpu_model="h100-sxm-80gb")
SPAN_END = MONDAY_9 + 5 * 24 * HOUR


def book(pool: str, gpus: int, start: datetime, hours: int) -> None:
    request = booking(gpus=gpus, start=start, hours=hours, pool=pool)
    svc.reservation_create(
        tenant=TenantFactory(), request=request, fingerprint=request.fingerprint(), now=NOW
    )


@pytest.fixture
def tenant(db) -> Tenant:
    return TenantFactory()


@pytest.fixture
def catalogue(db) -> None:
    # busy: 32 GPUs, booked in stretches; late: the same, its contract ends in the span;
    # broken: an incident takes 16 GPUs out for a day; partial: sells single GPUs, half held
    # back; small: one node of 8
    CapacityPoolFactory(slug="busy", price_per_gpu_hour="2.00")
    CapacityPoolFactory(slug="late", available_until=MONDAY_9 + 60 * HOUR)
    broken = CapacityPoolFactory(slug="broken", price_per_gpu_hour="2.50")
    CapacityPoolFactory(slug="partial", allow_partial_nodes=True, reserved_gpus=16)
    CapacityPoolFactory(slug="small", node_count=1, price_per_gpu_hour="1.00")
    for start, gpus, hours in ((0, 24, 6), (8, 32, 3), (14, 16, 30), (50, 8, 20), (90, 32, 1)):
        book("busy", gpus, MONDAY_9 + start * HOUR, hours)
    book("late", 16, MONDAY_9 + 20 * HOUR, 10)
    book("partial", 8, MONDAY_9 + 3 * HOUR, 40)
    book("small", 8, MONDAY_9 + 30 * HOUR, 5)
    incident_open(
        pool=broken,
        kind=Incident.Kind.MAINTENANCE,
        gpus=16,
        start=MONDAY_9 + 12 * HOUR,
        end=MONDAY_9 + 36 * HOUR,
        now=NOW,
    )


def hour_by_hour_starts(gpus: int, hours: int, start: datetime, end: datetime) -> dict:
    """Each pool's first start, from the hours one by one."""
    found = {}
    for pool in selectors.candidate_pools(H100, currency="USD"):
        if gpus % pool.booking_step:
            continue
        free = capacity_selectors.free_by_hour(pool, start, end)
        for i in range(len(free) - hours + 1):
            if min(free[i : i + hours]) >= gpus:
                found[pool.slug] = (start + i * HOUR, min(free[i : i + hours]))
                break
    return found


QUERIES = [(gpus, hours) for gpus in (1, 8, 16, 24, 32) for hours in (1, 4, 12, 40, 100)]


@pytest.mark.parametrize(("gpus", "hours"), QUERIES)
def test_earliest_windows_are_those_of_reading_every_hour(tenant, catalogue, gpus, hours):
    windows = selectors.earliest_windows(
        tenant=tenant,
        criteria=H100,
        gpu_count=gpus,
        duration_hours=hours,
        not_before=MONDAY_9,
        not_after=SPAN_END,
        limit=10,
    )

    expected = hour_by_hour_starts(gpus, hours, MONDAY_9, SPAN_END)
    assert {w.pool.slug: (w.start, w.available_gpus) for w in windows} == expected
    assert [w.start for w in windows] == sorted(w.start for w in windows)


@pytest.mark.parametrize(("gpus", "hours"), QUERIES)
def test_availability_is_that_of_reading_every_hour(tenant, catalogue, gpus, hours):
    for offset in (0, 10, 30, 55):
        start = MONDAY_9 + offset * HOUR
        offers = selectors.availability_search(
            tenant=tenant, criteria=H100, gpu_count=gpus, start=start, end=start + hours * HOUR
        )

        expected = hour_by_hour_starts(gpus, hours, start, start + hours * HOUR)
        assert {w.pool.slug: (w.start, w.available_gpus) for w in offers} == expected


def test_the_set_based_and_the_hour_by_hour_search_agree_in_order(tenant, catalogue, monkeypatch):
    def search() -> list[tuple]:
        return [
            (w.pool.slug, w.start, w.available_gpus, w.unit_price, w.total_price)
            for w in selectors.earliest_windows(
                tenant=tenant,
                criteria=H100,
                gpu_count=8,
                duration_hours=6,
                not_before=MONDAY_9,
                not_after=SPAN_END,
                limit=3,
            )
        ]

    set_based = search()
    monkeypatch.setattr(selectors, "set_based_search_supported", lambda start: False)

    assert search() == set_based
    assert len(set_based) == 3


def test_a_window_beyond_the_first_look_is_found_in_the_whole_span(tenant):
    # given one pool full for the first 100 hours of a 10-day span
    CapacityPoolFactory(slug="full")
    book("full", 32, MONDAY_9, 100)
    assert MONDAY_9 + 4 * HOUR + capacity_selectors.FIRST_LOOK < MONDAY_9 + 100 * HOUR

    # when 4 hours are searched for
    windows = selectors.earliest_windows(
        tenant=tenant,
        criteria=H100,
        gpu_count=8,
        duration_hours=4,
        not_before=MONDAY_9,
        not_after=MONDAY_9 + timedelta(days=10),
    )

    # then the window starts right after the full stretch
    assert [(w.pool.slug, w.start, w.available_gpus) for w in windows] == [
        ("full", MONDAY_9 + 100 * HOUR, 32)
    ]
