"""Incidents on the capacity ledger, without the marketplace: GPUs taken out of service lower
what may be sold from the incident's start; booked GPUs that no longer fit are never a reason
to refuse the incident but are marked as excess (the marketplace moves them); closing gives
the GPUs back from its end on.

The clock is the services' ``now=`` argument: 08:30 UTC on Monday 2026-12-07, so 08:00 is the
hour in progress."""

from datetime import UTC, datetime, timedelta

import pytest

from capacity.errors import InsufficientCapacity, InvalidIncident, InvalidWindow
from capacity.models import CapacityPool, Incident, PoolHour
from capacity.selectors import excess_hours, free_gpus
from capacity.services import (
    capacity_claim,
    capacity_release,
    incident_close,
    incident_open,
    pool_update,
)
from tests.factories import CapacityPoolFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    """2026-12-07 at ``hour``:``minute`` UTC."""
    return datetime(2026, 12, 7, hour, minute, tzinfo=UTC)


def ledger(pool: CapacityPool) -> list[tuple[int, int, int, int]]:
    """The pool's ledger as (hour of the day, capacity, booked, excess), in hour order."""
    rows = PoolHour.objects.filter(pool=pool).order_by("hour")
    return [
        (hour.hour, capacity, booked, excess)
        for hour, capacity, booked, excess in rows.values_list(
            "hour", "capacity", "booked", "excess"
        )
    ]


def outage(pool: CapacityPool, gpus: int, start: datetime, end: datetime | None, **kw) -> Incident:
    return incident_open(
        pool=pool,
        kind=kw.pop("kind", Incident.Kind.OUTAGE),
        gpus=gpus,
        start=start,
        end=end,
        now=kw.pop("now", NOW),
        **kw,
    )


@pytest.fixture
def pool() -> CapacityPool:
    """32 GPUs (4 nodes of 8), 24 of them booked 10:00-16:00."""
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    capacity_claim(pool_id=pool.pk, start=at(10), end=at(16), gpus=24)
    return pool


# --- recording ---------------------------------------------------------------------------------


def test_planned_maintenance_reduces_what_can_be_booked():
    # given an empty 32-GPU pool with 16 GPUs out for maintenance 10-12
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    incident_open(
        pool=pool, kind=Incident.Kind.MAINTENANCE, gpus=16, start=at(10), end=at(12), now=NOW
    )

    # when 24 and then 16 GPUs are claimed 09-13
    assert free_gpus(pool, at(9), at(13)) == 16
    with pytest.raises(InsufficientCapacity) as error:
        capacity_claim(pool_id=pool.pk, start=at(9), end=at(13), gpus=24)
    capacity_claim(pool_id=pool.pk, start=at(9), end=at(13), gpus=16)

    # then only 16 fit, and the hours outside the maintenance keep the whole pool
    assert error.value.extra == {"available_gpus": 16}
    assert ledger(pool) == [(9, 32, 16, 0), (10, 16, 16, 0), (11, 16, 16, 0), (12, 32, 16, 0)]


def test_an_incident_over_booked_hours_is_recorded_and_marks_the_excess(pool):
    # when 16 GPUs fail 11-13 while 24 of 32 are booked
    incident = outage(pool, 16, at(11), at(13), reason="PDU failure", recorded_by="op")

    # then it is recorded, not refused: capacity drops to 16 and the 8 booked beyond it are excess
    incident.refresh_from_db()
    assert (incident.kind, incident.gpus, incident.start, incident.end) == (
        "outage",
        16,
        at(11),
        at(13),
    )
    assert (incident.reason, incident.recorded_by, incident.displaced_at) == (
        "PDU failure",
        "op",
        None,
    )
    assert ledger(pool) == [
        (10, 32, 24, 0),
        (11, 16, 24, 8),
        (12, 16, 24, 8),
        (13, 32, 24, 0),
        (14, 32, 24, 0),
        (15, 32, 24, 0),
    ]
    assert list(excess_hours(pool.pk, at(0), None).values_list("excess", flat=True)) == [8, 8]

    # and an hour in excess sells nothing, not even what the rest of the pool would have free
    assert free_gpus(pool, at(11), at(12)) == 0
    with pytest.raises(InsufficientCapacity):
        capacity_claim(pool_id=pool.pk, start=at(11), end=at(12), gpus=8)


def test_gpus_given_back_in_an_hour_in_excess_pay_the_excess_off_first(pool):
    outage(pool, 16, at(11), at(12))
    assert ledger(pool)[1] == (11, 16, 24, 8)

    # when 8 of the booked GPUs are released 10-12, then 8 more
    capacity_release(pool_id=pool.pk, start=at(10), end=at(12), gpus=8)
    after_first = ledger(pool)[:2]
    capacity_release(pool_id=pool.pk, start=at(10), end=at(12), gpus=8)

    # then the first 8 pay the excess off without freeing anything there; the next 8 free GPUs
    assert after_first == [(10, 32, 16, 0), (11, 16, 16, 0)]
    assert ledger(pool)[:2] == [(10, 32, 8, 0), (11, 16, 8, 0)]


def test_an_open_incident_applies_to_every_later_hour_also_those_booked_later():
    # given a pool with nothing booked and a node out from 10:00 until further notice
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    incident = outage(pool, 8, at(10), None)
    assert incident.is_open

    # when GPUs are claimed that day and a week later
    capacity_claim(pool_id=pool.pk, start=at(9), end=at(11), gpus=8)
    week_later = at(10) + timedelta(days=7)
    capacity_claim(pool_id=pool.pk, start=week_later, end=week_later + timedelta(hours=1), gpus=8)

    # then every hour from 10:00 on, however far ahead, sells 24
    assert [row[:2] for row in ledger(pool)] == [(9, 32), (10, 24), (10, 24)]
    assert free_gpus(pool, at(12) + timedelta(days=30), at(13) + timedelta(days=30)) == 24


def test_an_outage_recorded_late_applies_to_hours_already_past(pool):
    # when at 14:30 an outage of 16 GPUs is recorded that began at 10:00 and is still going on
    outage(pool, 16, at(10), None, now=at(14, 30))

    # then the hours already past lose those GPUs as well: they were not delivered
    assert [row[1:] for row in ledger(pool)] == [(16, 24, 8)] * 6


@pytest.mark.parametrize(
    "start",
    [at(7), at(6) - timedelta(days=1)],
    ids=["the_hour_before_the_one_in_progress", "yesterday"],
)
def test_planned_maintenance_cannot_start_in_the_past(pool, start):
    with pytest.raises(InvalidWindow) as error:
        incident_open(
            pool=pool, kind=Incident.Kind.MAINTENANCE, gpus=8, start=start, end=at(12), now=NOW
        )

    assert error.value.fields["start"][0]["code"] == "in_past"
    assert not Incident.objects.exists()
    assert [row[1] for row in ledger(pool)] == [32] * 6


def test_planned_maintenance_may_start_in_the_hour_in_progress(pool):
    # at 10:30, 10:00 is in progress
    incident_open(
        pool=pool, kind=Incident.Kind.MAINTENANCE, gpus=8, start=at(10), end=at(11), now=at(10, 30)
    )
    assert ledger(pool)[0] == (10, 24, 24, 0)


@pytest.mark.parametrize("gpus", [0, 33])
def test_an_incident_takes_between_one_gpu_and_the_whole_pool(pool, gpus):
    with pytest.raises(InvalidIncident) as error:
        outage(pool, gpus, at(10), at(12))

    assert error.value.fields["gpus"][0]["code"] == "out_of_range"
    assert not Incident.objects.exists()


def test_the_whole_pool_may_be_out(pool):
    outage(pool, 32, at(10), at(11))
    assert ledger(pool)[0] == (10, 0, 24, 24)


def test_only_backup_capacity_is_recalled_and_short_notice_is_marked():
    # given a primary pool and a backup pool promising 2 hours' notice
    primary = CapacityPoolFactory()
    backup = CapacityPoolFactory(tier=CapacityPool.Tier.BACKUP, recall_notice_hours=2)

    # when each is recalled from 10:00, the backup one at 08:30 and again at 07:59
    with pytest.raises(InvalidIncident) as error:
        outage(primary, 8, at(10), None, kind=Incident.Kind.RECALL)
    late = outage(backup, 8, at(10), None, kind=Incident.Kind.RECALL)
    early = outage(backup, 8, at(10), None, kind=Incident.Kind.RECALL, now=at(7, 59))

    # then the primary pool is not recallable, and only the backup recall inside the notice
    # is short notice
    assert error.value.fields["kind"][0]["code"] == "not_recallable"
    assert (late.short_notice, early.short_notice) == (True, False)


# --- closing -----------------------------------------------------------------------------------


def test_closing_shortens_a_fixed_end_incident_and_gives_the_hours_after_back(pool):
    # given 16 GPUs out 11-15 over 24 booked: 8 in excess each hour
    incident = outage(pool, 16, at(11), at(15))

    # when at 12:20 it is closed from 13:00
    closed = incident_close(incident=incident, end=at(13), now=at(12, 20))

    # then it ends at 13:00, and 13-15 sell the whole pool again with nothing in excess
    incident.refresh_from_db()
    assert (incident.end, incident.closed_at) == (at(13), at(12, 20))
    assert (closed.end, closed.closed_at) == (at(13), at(12, 20))
    assert ledger(pool) == [
        (10, 32, 24, 0),
        (11, 16, 24, 8),
        (12, 16, 24, 8),
        (13, 32, 24, 0),
        (14, 32, 24, 0),
        (15, 32, 24, 0),
    ]


def test_closing_never_lengthens_an_incident(pool):
    incident = outage(pool, 16, at(11), at(13))

    incident_close(incident=incident, end=at(15), now=NOW)

    incident.refresh_from_db()
    assert incident.end == at(13)
    assert [row[1] for row in ledger(pool)] == [32, 16, 16, 32, 32, 32]


def test_closing_an_open_incident_ends_it_at_the_next_whole_hour(pool):
    incident = outage(pool, 16, at(10), None)

    incident_close(incident=incident, now=at(12, 20))

    incident.refresh_from_db()
    assert (incident.end, incident.is_open) == (at(13), False)
    assert [row[1] for row in ledger(pool)] == [16, 16, 16, 32, 32, 32]


@pytest.mark.parametrize("end", [None, at(13)], ids=["open", "fixed_end"])
def test_closing_an_incident_that_has_not_begun_withdraws_it(pool, end):
    # given 16 GPUs to go out from 11:00 (8 in excess from then on)
    incident = outage(pool, 16, at(11), end)
    assert ledger(pool)[1] == (11, 16, 24, 8)

    # when it is closed at 08:30, before it began
    incident_close(incident=incident, now=NOW)

    # then it stays on record but ends where it starts, and no hour loses any GPU
    incident.refresh_from_db()
    assert (incident.start, incident.end, incident.closed_at) == (at(11), at(11), NOW)
    assert not incident.covers(at(11))
    assert [row[1:] for row in ledger(pool)] == [(32, 24, 0)] * 6


def test_closing_a_closed_incident_returns_it_unchanged(pool):
    incident = outage(pool, 16, at(10), None)
    incident_close(incident=incident, end=at(12), now=at(10, 30))
    before = ledger(pool)

    # when it is closed again, later and with another end
    again = incident_close(incident=incident, end=at(11), now=at(10, 45))
    default = incident_close(incident=incident, now=at(11, 30))

    # then nothing changes: the first close stands
    assert (again.end, again.closed_at) == (at(12), at(10, 30))
    assert (default.end, default.closed_at) == (at(12), at(10, 30))
    incident.refresh_from_db()
    assert (incident.end, incident.closed_at) == (at(12), at(10, 30))
    assert ledger(pool) == before


@pytest.mark.parametrize(
    ("end", "field", "code"),
    [
        (at(11), "end", "in_past"),  # before the hour in progress
        (at(9), "end", "in_past"),  # before the incident's start, too
        (at(12, 30), "end", "not_whole_hour"),
        (at(13).replace(tzinfo=None), "end", "naive_datetime"),
    ],
)
def test_closing_with_an_end_before_the_hour_in_progress_is_refused(pool, end, field, code):
    # given 16 GPUs out since 10:00, still open at 12:30
    incident = outage(pool, 16, at(10), None)
    before = ledger(pool)

    with pytest.raises(InvalidWindow) as error:
        incident_close(incident=incident, end=end, now=at(12, 30))

    # then it stays open and the ledger is as it was
    assert error.value.fields[field][0]["code"] == code
    incident.refresh_from_db()
    assert (incident.end, incident.closed_at) == (None, None)
    assert ledger(pool) == before


def test_closing_from_the_hour_in_progress_gives_that_hour_back(pool):
    incident = outage(pool, 16, at(10), None)

    incident_close(incident=incident, end=at(12), now=at(12, 30))

    assert [row[1] for row in ledger(pool)] == [16, 16, 32, 32, 32, 32]


def test_a_late_outage_takes_its_gpus_off_what_past_hours_had_not_off_todays_pool_size():
    # given a 32-GPU pool fully booked 06:00-08:00, then cut to 16 GPUs at 08:30 (the past
    # hours keep their 32 as history)
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    capacity_claim(pool_id=pool.pk, start=at(6), end=at(8), gpus=32)
    pool.refresh_from_db()
    pool_update(pool=pool, node_count=2, now=NOW)

    # when an 8-GPU outage of 06:00-08:00 is recorded late
    outage(pool, 8, at(6), at(8))

    # then those hours had 24 sellable GPUs (32 - 8), not the 8 today's size would leave
    assert ledger(pool) == [(6, 24, 32, 8), (7, 24, 32, 8)]
