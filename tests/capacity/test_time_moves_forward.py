"""Capacity changes apply from the hour in progress on: earlier ledger hours are history —
except the hours an incident found late took out of service.

An operator resizing a pool changes what may be sold from now on; the rows of hours already
gone keep the capacity and bookings they had, so a pool can shrink below its past peak.
Planned maintenance cannot start in the past, and closing an incident gives GPUs back from the
hour in progress on at the earliest. An outage recorded late is different: the GPUs were not
there, so its hours already past lose them too, and what was booked in them becomes excess.
The clock is the services' ``now=`` argument: it is 10:30 UTC on Monday 2026-12-07, so 10:00
is the hour in progress."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from capacity.errors import CapacityInUse, InvalidWindow
from capacity.models import CapacityPool, Incident, PoolHour
from capacity.selectors import capacity_shortfall
from capacity.services import incident_close, incident_open, pool_update
from tests.capacity.test_admin import pool_form
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.marketplace.conftest import booking
from tests.marketplace.test_booking import book
from tests.marketplace.test_concurrency import ledger_violations

pytestmark = pytest.mark.django_db

BOOKED_AT = datetime(2026, 12, 5, 12, tzinfo=UTC)  # when the bookings below were made
YESTERDAY_9 = datetime(2026, 12, 6, 9, tzinfo=UTC)
NOW = datetime(2026, 12, 7, 10, 30, tzinfo=UTC)


def at(hour: int, day: int = 7) -> datetime:
    """2026-12-``day`` at ``hour``:00 UTC."""
    return datetime(2026, 12, day, hour, tzinfo=UTC)


def ledger(pool: CapacityPool) -> list[tuple[datetime, int, int]]:
    """The pool's ledger as (hour, capacity, booked), in hour order."""
    rows = PoolHour.objects.filter(pool=pool).order_by("hour")
    return list(rows.values_list("hour", "capacity", "booked"))


def excess(pool: CapacityPool) -> list[int]:
    """The pool's ledger ``excess``, in hour order."""
    return list(
        PoolHour.objects.filter(pool=pool).order_by("hour").values_list("excess", flat=True)
    )


@pytest.fixture
def pool() -> CapacityPool:
    """32 GPUs (4 nodes of 8), all of them booked yesterday 09:00-13:00."""
    pool = CapacityPoolFactory(slug="pool-a", gpus_per_node=8, node_count=4)
    book(TenantFactory(), booking(gpus=32, start=YESTERDAY_9, hours=4), now=BOOKED_AT)
    return pool


def test_a_pool_full_in_the_past_can_shrink_now_and_its_past_stays_as_it_was(pool):
    # given yesterday's hours full at 32 GPUs and 16 GPUs booked today 09:00-13:00
    book(TenantFactory(), booking(gpus=16, start=at(9), hours=4), now=BOOKED_AT)

    # when the pool is cut to 2 nodes at 10:30
    pool_update(pool=pool, node_count=2, now=NOW)

    # then it is, yesterday and today's 09:00 keep their 32, and from 10:00 on 16 may be sold
    pool.refresh_from_db()
    assert (pool.node_count, pool.total_gpus) == (2, 16)
    assert ledger(pool) == [
        (at(9, day=6), 32, 32),
        (at(10, day=6), 32, 32),
        (at(11, day=6), 32, 32),
        (at(12, day=6), 32, 32),
        (at(9), 32, 16),
        (at(10), 16, 16),
        (at(11), 16, 16),
        (at(12), 16, 16),
    ]
    assert ledger_violations(since=at(10)) == []


@pytest.mark.parametrize(
    ("start", "hour"),
    [
        (at(10), "2026-12-07T10:00:00+00:00"),  # the hour in progress
        (at(14), "2026-12-07T14:00:00+00:00"),  # a later hour
    ],
)
def test_shrinking_below_what_is_booked_from_now_on_is_still_refused(pool, start, hour):
    # given 24 GPUs booked for an hour that has not ended yet
    book(TenantFactory(), booking(gpus=24, start=start, hours=1), now=BOOKED_AT)
    before = ledger(pool)

    # when the pool is cut to 2 nodes at 10:30
    with pytest.raises(CapacityInUse) as error:
        pool_update(pool=pool, node_count=2, now=NOW)

    # then capacity_in_use names that hour, and neither the pool nor the ledger changed
    assert error.value.code == "capacity_in_use"
    assert error.value.extra == {"hour": hour, "booked_gpus": 24, "capacity_gpus": 16}
    pool.refresh_from_db()
    assert pool.node_count == 4
    assert ledger(pool) == before


def test_an_outage_recorded_late_applies_to_the_hours_already_past(pool):
    # given yesterday's hours full and 8 GPUs booked today 09:00-13:00
    book(TenantFactory(), booking(gpus=8, start=at(9), hours=4), now=BOOKED_AT)

    # when at 10:30 the operator records 16 GPUs out since yesterday 09:00 until 13:00 today
    incident = incident_open(
        pool=pool,
        kind=Incident.Kind.OUTAGE,
        start=YESTERDAY_9,
        end=at(13),
        gpus=16,
        now=NOW,
    )

    # then every hour of it drops to 16, the past too: yesterday's full hours were not
    # delivered in full, and the 16 GPUs booked beyond capacity there are marked excess
    assert list(Incident.objects.values_list("start", "end", "gpus")) == [(YESTERDAY_9, at(13), 16)]
    assert ledger(pool) == [
        (at(9, day=6), 16, 32),
        (at(10, day=6), 16, 32),
        (at(11, day=6), 16, 32),
        (at(12, day=6), 16, 32),
        (at(9), 16, 8),
        (at(10), 16, 8),
        (at(11), 16, 8),
        (at(12), 16, 8),
    ]
    assert excess(pool) == [16, 16, 16, 16, 0, 0, 0, 0]
    assert ledger_violations() == []

    # and at 11:15 it cannot be closed from 10:00 (history by now), only from 11:00 on
    with pytest.raises(InvalidWindow) as error:
        incident_close(incident=incident, end=at(10), now=at(11) + timedelta(minutes=15))
    assert error.value.fields["end"][0]["code"] == "in_past"
    incident_close(incident=incident, end=at(11), now=at(11) + timedelta(minutes=15))
    incident.refresh_from_db()
    assert incident.end == at(11)
    assert ledger(pool) == [
        (at(9, day=6), 16, 32),
        (at(10, day=6), 16, 32),
        (at(11, day=6), 16, 32),
        (at(12, day=6), 16, 32),
        (at(9), 16, 8),
        (at(10), 16, 8),
        (at(11), 32, 8),
        (at(12), 32, 8),
    ]
    assert ledger_violations() == []


def test_planned_maintenance_cannot_start_before_the_hour_in_progress(pool):
    # given yesterday's hours full and 8 GPUs booked today 09:00-13:00
    book(TenantFactory(), booking(gpus=8, start=at(9), hours=4), now=BOOKED_AT)
    before = ledger(pool)

    # when at 10:30 the operator plans maintenance of 16 GPUs from 09:00, then from 10:00
    with pytest.raises(InvalidWindow) as error:
        incident_open(
            pool=pool, kind=Incident.Kind.MAINTENANCE, start=at(9), end=at(13), gpus=16, now=NOW
        )
    refused = ledger(pool)
    incident_open(
        pool=pool, kind=Incident.Kind.MAINTENANCE, start=at(10), end=at(13), gpus=16, now=NOW
    )

    # then the first is refused naming its start and changes nothing; the second is planned
    # from the hour in progress on
    assert (error.value.code, error.value.fields["start"][0]["code"]) == (
        "invalid_window",
        "in_past",
    )
    assert refused == before
    assert list(Incident.objects.values_list("kind", "start")) == [("maintenance", at(10))]
    assert ledger(pool)[4:] == [(at(9), 32, 8), (at(10), 16, 8), (at(11), 16, 8), (at(12), 16, 8)]
    assert ledger_violations() == []


def test_the_shrink_pre_check_ignores_the_past_and_names_the_first_hour_from_now_on(pool):
    # given yesterday's hours full, and the pool cut to 2 nodes in memory (not saved)
    edited = CapacityPool.objects.get(pk=pool.pk)
    edited.node_count = 2

    # when the operator's form asks at 10:30, before and after 24 GPUs are booked 14:00-16:00
    only_past = capacity_shortfall(edited, now=NOW)
    book(TenantFactory(), booking(gpus=24, start=at(14), hours=2), now=BOOKED_AT)
    short = capacity_shortfall(edited, now=NOW)

    # then the past alone is no conflict; the booking is, at its first hour, as the service says
    assert only_past is None
    assert (short.hour, short.booked, short.capacity) == (at(14), 24, 16)
    with pytest.raises(CapacityInUse) as error:
        pool_update(pool=pool, node_count=2, now=NOW)
    assert error.value.extra == {
        "hour": "2026-12-07T14:00:00+00:00",
        "booked_gpus": 24,
        "capacity_gpus": 16,
    }


def test_the_shrink_pre_check_counts_incidents_but_not_the_excess_they_left_in_the_past(pool):
    # given 16 GPUs booked 14:00-16:00, and 8 GPUs out since yesterday 09:00 until further
    # notice (yesterday's full hours now have 8 GPUs in excess)
    book(TenantFactory(), booking(gpus=16, start=at(14), hours=2), now=BOOKED_AT)
    incident_open(pool=pool, kind=Incident.Kind.OUTAGE, start=YESTERDAY_9, gpus=8, now=NOW)
    assert excess(pool)[:4] == [8, 8, 8, 8]

    # when the operator's form asks at 10:30 about cutting the pool to 3 nodes, then to 2
    three, two = CapacityPool.objects.get(pk=pool.pk), CapacityPool.objects.get(pk=pool.pk)
    three.node_count, two.node_count = 3, 2

    # then 3 nodes less the outage still hold the 16 (the past is no conflict); 2 nodes do not,
    # and the service refuses it at the same hour
    assert capacity_shortfall(three, now=NOW) is None
    short = capacity_shortfall(two, now=NOW)
    assert (short.hour, short.booked, short.capacity) == (at(14), 16, 8)
    with pytest.raises(CapacityInUse) as error:
        pool_update(pool=pool, node_count=2, now=NOW)
    assert error.value.extra == {
        "hour": "2026-12-07T14:00:00+00:00",
        "booked_gpus": 16,
        "capacity_gpus": 8,
    }
    pool_update(pool=pool, node_count=3, now=NOW)
    assert ledger_violations(since=at(10)) == []


def test_the_admin_shrinks_a_pool_that_was_full_in_the_past(client, operator, pool):
    # given yesterday's hours full, 16 GPUs booked today 09:00-13:00, and the operator signed in
    book(TenantFactory(), booking(gpus=16, start=at(9), hours=4), now=BOOKED_AT)
    client.force_login(operator)

    # when at 10:30 the operator cuts the pool to 2 nodes on its page
    with time_machine.travel(NOW, tick=False):
        response = client.post(
            f"/admin/capacity/capacitypool/{pool.pk}/change/", pool_form(pool, node_count=2)
        )

    # then the form accepts it, the past is left as it was and 10:00 on sells 16
    assert response.status_code == 302
    pool.refresh_from_db()
    assert pool.total_gpus == 16
    assert ledger(pool) == [
        (at(9, day=6), 32, 32),
        (at(10, day=6), 32, 32),
        (at(11, day=6), 32, 32),
        (at(12, day=6), 32, 32),
        (at(9), 32, 16),
        (at(10), 16, 16),
        (at(11), 16, 16),
        (at(12), 16, 16),
    ]
    assert ledger_violations(since=at(10)) == []
