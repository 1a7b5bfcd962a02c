"""Incidents and backup recalls: reservations are moved to other capacity for exactly the hours
lost, shrunk or interrupted where no room exists, and only the reservations that lost GPUs
are touched. The ledger equals the placements on every pool afterwards.

The clock is the services' ``now=``: 2026-12-01 08:30 UTC; the bookings are on Monday
2026-12-07 from 09:00."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from capacity.errors import InvalidIncident, InvalidWindow
from capacity.models import CapacityPool, Incident, PoolHour
from events.models import Event
from marketplace.models import (
    CancellationRule,
    Displacement,
    DisplacementRule,
    Placement,
    Reservation,
)
from marketplace.services import booking as svc
from marketplace.services.displacement import (
    affected_reservations,
    displacement_preview,
    incident_close,
    incident_record,
    incidents_displace_due,
)
from tests.factories import CapacityPoolFactory, RegionFactory
from tests.marketplace.api_helpers import tenant_client
from tests.marketplace.conftest import MONDAY_9, NOW, booking
from tests.marketplace.test_booking import book, booked
from tests.marketplace.test_concurrency import ledger_violations

pytestmark = pytest.mark.django_db


def at(hour: int) -> datetime:
    return MONDAY_9.replace(hour=hour)


def placements(reservation: Reservation) -> list[tuple[str, int, int, int]]:
    """(pool slug, first hour, end hour, GPUs) of the reservation, in time then pool order."""
    return [
        (p.pool.slug, p.start.hour, p.end.hour, p.gpus)
        for p in Placement.objects.filter(reservation=reservation)
        .select_related("pool")
        .order_by("start", "pool__slug")
    ]


def outage(pool: CapacityPool, gpus: int, start: datetime, end: datetime | None, **kw) -> Incident:
    return incident_record(
        pool=pool,
        kind=kw.pop("kind", Incident.Kind.OUTAGE),
        gpus=gpus,
        start=start,
        end=end,
        now=kw.pop("now", NOW),
        **kw,
    )


def event_types(reservation: Reservation) -> list[str]:
    return list(
        Event.objects.filter(data__id=str(reservation.pk))
        .order_by("sequence")
        .values_list("type", flat=True)
    )


@pytest.fixture
def big_pool(db) -> CapacityPool:
    return CapacityPoolFactory(slug="big", gpus_per_node=8, node_count=64)  # 512 GPUs


def test_an_outage_of_idle_gpus_changes_no_reservation(tenant, big_pool):
    # given 100 GPUs... in whole nodes: 13 reservations of 8 (104 of 512) booked 09-13
    reservations = [book(tenant, booking(gpus=8, start=at(9), hours=4)) for _ in range(13)]
    before = [(r.pk, r.charge, placements(r)) for r in reservations]

    # when 8 idle GPUs fail 10-12
    incident = outage(big_pool, 8, at(10), at(12))

    # then capacity drops, nothing is in excess, no reservation, placement or charge changes
    assert list(PoolHour.objects.filter(pool=big_pool).values_list("capacity", flat=True)) == [
        512,
        504,
        504,
        512,
    ]
    assert [
        (r.pk, r.charge, placements(r)) for r in Reservation.objects.order_by("created_at")
    ] == sorted(before, key=lambda row: [r.pk for r in reservations].index(row[0]))
    assert not Displacement.objects.exists()
    incident.refresh_from_db()
    assert incident.displaced_at is not None
    assert ledger_violations() == []


def test_a_whole_pool_outage_moves_every_reservation_for_exactly_those_hours(tenant, pool):
    # given 32 GPUs booked on pool-a 09-15 by four reservations, and another pool with room
    other = CapacityPoolFactory(
        slug="pool-b", gpus_per_node=8, node_count=8, price_per_gpu_hour=Decimal("9.0000")
    )
    reservations = [book(tenant, booking(gpus=8, start=at(9), hours=6)) for _ in range(4)]
    prices = {r.pk: (r.unit_price, r.total_price, r.charge) for r in reservations}

    # when all of pool-a fails 11-13
    outage(pool, 32, at(11), at(13))

    # then each keeps pool-a before and after, and runs on pool-b 11-13, at its own price
    for reservation in reservations:
        reservation.refresh_from_db()
        assert placements(reservation) == [
            ("pool-a", 9, 11, 8),
            ("pool-b", 11, 13, 8),
            ("pool-a", 13, 15, 8),
        ]
        assert (reservation.unit_price, reservation.total_price, reservation.charge) == prices[
            reservation.pk
        ]
        assert event_types(reservation)[-1] == "reservation.moved"
    assert booked(pool) == [32, 32, 0, 0, 32, 32]
    assert booked(other) == [32, 32]
    displacements = Displacement.objects.all()
    assert {(d.gpus_taken, d.gpus_moved, d.gpus_lost, d.hours) for d in displacements} == {
        (8, 8, 0, 2)
    }
    assert ledger_violations() == []


def test_moves_prefer_the_same_region_then_country_then_primary_capacity(tenant, pool):
    # given pools of the model: backup in pool-a's region, primary in its country, primary
    # abroad, and a primary one in the same region but priced in another currency
    dearer = {"price_per_gpu_hour": Decimal("4.0000")}
    CapacityPoolFactory(slug="same-region-backup", region=pool.region, tier="backup", **dearer)
    CapacityPoolFactory(
        slug="same-country", region=RegionFactory(country=pool.region.country), **dearer
    )
    CapacityPoolFactory(slug="abroad", region=RegionFactory(country="DE"), **dearer)
    CapacityPoolFactory(slug="same-region-eur", region=pool.region, currency="EUR")
    reservation = book(tenant, booking(gpus=32, start=at(9), hours=2))
    assert reservation.pool == pool

    # when pool-a fails for an hour
    outage(pool, 32, at(9), at(10))

    # then the backup pool in its region takes it (same region beats primary elsewhere)
    assert placements(reservation) == [("same-region-backup", 9, 10, 32), ("pool-a", 10, 11, 32)]


def test_a_move_stays_within_what_the_request_allowed(tenant, pool):
    # given a booking pinned to pool-a's provider, and room only at another provider
    CapacityPoolFactory(slug="elsewhere")
    reservation = book(
        tenant, booking(gpus=8, start=at(9), hours=2, provider=pool.region.provider.slug)
    )

    # when pool-a fails
    outage(pool, 32, at(9), at(11))

    # then it is not moved: it is interrupted for those hours, and tells the tenant so
    reservation.refresh_from_db()
    assert placements(reservation) == []
    assert reservation.charge == Decimal("0.00")
    (displacement,) = Displacement.objects.all()
    assert (displacement.gpus_moved, displacement.gpus_lost, displacement.hours) == (0, 8, 2)
    assert event_types(reservation)[-1] == "reservation.interrupted"


def test_with_no_room_anywhere_reservations_shrink_for_those_hours_and_are_charged_less(
    tenant, pool
):
    # given 32 GPUs booked 09-13 in two reservations (confirmed one after the other)
    first = book(tenant, booking(gpus=16, start=at(9), hours=4), now=NOW)
    second = book(tenant, booking(gpus=16, start=at(9), hours=4), now=NOW + timedelta(minutes=1))

    # when 8 GPUs fail 10-12 and no other pool exists
    outage(pool, 8, at(10), at(12))

    # then the most recently confirmed loses one node for those two hours only
    assert placements(first) == [("pool-a", 9, 13, 16)]
    assert placements(second) == [
        ("pool-a", 9, 10, 16),
        ("pool-a", 10, 12, 8),
        ("pool-a", 12, 13, 16),
    ]
    second.refresh_from_db()
    # 3.00 x (64 - 16) GPU-hours
    assert second.charge == Decimal("144.00")
    assert second.total_price == Decimal("192.00")
    (displacement,) = Displacement.objects.all()
    assert (displacement.reservation_id, displacement.gpus_lost) == (second.pk, 8)
    event = Event.objects.get(type="reservation.interrupted")
    assert event.data["lost"] == [
        {
            "start": "2026-12-07T10:00:00Z",
            "end": "2026-12-07T12:00:00Z",
            "gpus": 8,
            "gpu_hours": 16,
        }
    ]
    assert ledger_violations() == []


def test_recallable_reservations_lose_first_even_when_confirmed_earlier(tenant, pool):
    # given a backup pool of 16 GPUs: 8 sold as backup (recallable) at 08:30, and 8 of a
    # primary reservation confirmed at 09:30 that an outage of pool-a moved there
    backup = CapacityPoolFactory(slug="backup", tier="backup", gpus_per_node=8, node_count=2)
    recallable = book(tenant, booking(gpus=8, start=at(9), hours=1, tier="backup"), now=NOW)
    primary = book(tenant, booking(gpus=8, start=at(9), hours=1), now=NOW + timedelta(hours=1))
    outage(pool, 32, at(9), at(10))
    assert placements(primary) == [("backup", 9, 10, 8)]

    # when a node of the backup pool fails too
    outage(backup, 8, at(9), at(10))

    # then the recallable reservation loses it, though the primary one was confirmed later
    assert placements(recallable) == []
    assert placements(primary) == [("backup", 9, 10, 8)]


def test_the_policy_is_data_an_operator_can_reverse_it(tenant, pool):
    # given two reservations filling pool-a, and the policy changed to earliest confirmed first
    early = book(tenant, booking(gpus=16, start=at(9), hours=1), now=NOW)
    late = book(tenant, booking(gpus=16, start=at(9), hours=1), now=NOW + timedelta(hours=1))
    DisplacementRule.objects.filter(order="latest_confirmed_first").update(
        order="earliest_confirmed_first"
    )

    # when a node fails
    outage(pool, 8, at(9), at(10))

    # then the earliest confirmed one loses it
    assert placements(early) == [("pool-a", 9, 10, 8)]
    assert placements(late) == [("pool-a", 9, 10, 16)]


def test_hours_already_past_are_lost_not_moved(tenant, pool):
    # given a reservation 09-13 and room on another pool
    CapacityPoolFactory(slug="pool-b")
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))

    # when, at 11:30, an outage is recorded that began at 09:00 and is still open
    outage(pool, 32, at(9), None, now=at(11) + timedelta(minutes=30))

    # then 09-11 are lost (cannot run in the past) and 11-13 run on pool-b
    assert placements(reservation) == [("pool-b", 11, 13, 8)]
    lost = Displacement.objects.get(gpus_lost__gt=0)
    assert (lost.start.hour, lost.end.hour, lost.gpus_lost) == (9, 11, 8)
    assert ledger_violations() == []


def test_closing_an_incident_gives_the_capacity_back_and_leaves_moves_as_they_are(tenant, pool):
    CapacityPoolFactory(slug="pool-b")
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))
    incident = outage(pool, 32, at(9), None)

    # when it is closed at 10:20 (back from 11:00)
    incident_close(incident=incident, now=at(10) + timedelta(minutes=20))

    # then the end is 11:00, pool-a sells again from 11:00, the reservation stays on pool-b
    incident.refresh_from_db()
    assert incident.end == at(11)
    assert list(PoolHour.objects.filter(pool=pool).values_list("capacity", flat=True)) == [
        0,
        0,
        32,
        32,
    ]
    assert placements(reservation) == [("pool-b", 9, 13, 8)]
    assert ledger_violations() == []


def test_a_recall_with_notice_warns_now_and_displaces_at_the_recall_hour(tenant):
    # given 16 GPUs booked on a backup pool 09-13, sold as recallable with 2 h notice
    backup = CapacityPoolFactory(
        slug="backup", tier="backup", gpus_per_node=8, node_count=2, recall_notice_hours=2
    )
    reservation = book(tenant, booking(gpus=16, start=at(9), hours=4))
    CapacityPoolFactory(slug="pool-b")
    assert reservation.pool == backup
    assert reservation.pool.recallable

    # when at 08:00 the owner recalls all of it from 10:00
    recorded = at(8)
    incident = incident_record(
        pool=backup, kind=Incident.Kind.RECALL, gpus=16, start=at(10), end=None, now=recorded
    )

    # then the tenant is told at once, with when and how many, and nothing moves yet
    assert not incident.short_notice
    notice = Event.objects.get(type="reservation.recall_notice")
    assert notice.data["recall"]["start"] == "2026-12-07T10:00:00Z"
    assert notice.data["recall"]["gpus"] == 16
    assert placements(reservation) == [("backup", 9, 13, 16)]
    assert incidents_displace_due(now=at(9) + timedelta(minutes=59)) == []

    # and at the recall hour the displacement job moves it to pool-b from 10:00
    (result,) = incidents_displace_due(now=at(10))
    assert result.gpu_hours_moved == 16 * 3
    assert placements(reservation) == [("backup", 9, 10, 16), ("pool-b", 10, 13, 16)]
    assert incidents_displace_due(now=at(10)) == []
    assert ledger_violations() == []


def test_a_recall_inside_the_notice_is_allowed_and_marked_short_notice(tenant):
    backup = CapacityPoolFactory(slug="backup", tier="backup", recall_notice_hours=2)
    book(tenant, booking(gpus=8, start=at(9), hours=4))
    incident = incident_record(
        pool=backup, kind=Incident.Kind.RECALL, gpus=8, start=at(10), now=at(9)
    )
    assert incident.short_notice


def test_only_backup_capacity_can_be_recalled(pool):
    with pytest.raises(InvalidIncident) as error:
        incident_record(pool=pool, kind=Incident.Kind.RECALL, gpus=8, start=at(10), now=NOW)
    assert error.value.fields["kind"][0]["code"] == "not_recallable"
    assert not Incident.objects.exists()


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"start": datetime(2026, 12, 7, 9, 30, tzinfo=UTC)}, "start", "not_whole_hour"),
        ({"end": MONDAY_9}, "end", "before_start"),
        ({"gpus": 0}, "gpus", "out_of_range"),
        ({"gpus": 33}, "gpus", "out_of_range"),
        ({"kind": "maintenance", "start": datetime(2026, 11, 30, tzinfo=UTC)}, "start", "in_past"),
    ],
)
def test_bad_incidents_are_refused_naming_the_field(pool, changes, field, code):
    values = {"kind": "outage", "gpus": 8, "start": at(10), "end": at(12)} | changes
    with pytest.raises((InvalidIncident, InvalidWindow)) as error:
        incident_record(pool=pool, now=NOW, **values)
    assert error.value.fields[field][0]["code"] == code
    assert not Incident.objects.exists()


def test_the_preview_names_who_planned_maintenance_would_displace(tenant, pool):
    first = book(tenant, booking(gpus=16, start=at(9), hours=4), now=NOW)
    second = book(tenant, booking(gpus=16, start=at(9), hours=4), now=NOW + timedelta(minutes=1))
    assert displacement_preview(pool=pool, gpus=8, start=at(10), end=at(12)) == [(second, 8)]
    assert displacement_preview(pool=pool, gpus=24, start=at(10), end=at(12)) == [
        (second, 16),
        (first, 8),
    ]
    # nothing recorded
    assert not Incident.objects.exists()
    assert first.pk
    assert affected_reservations is not None


def test_a_cancelled_reservation_after_an_interruption_is_charged_for_what_it_got(tenant, pool):
    reservation = book(tenant, booking(gpus=16, start=at(9), hours=4))
    outage(pool, 32, at(9), at(10))  # hour 09 lost (no other pool)
    cancelled = svc.reservation_cancel(
        tenant=tenant,
        reservation_id=reservation.pk,
        cancelled_by="t",
        now=at(10) + timedelta(minutes=5),
    )
    # delivered: hour 10 only (16 GPU-hours at 3.00); the late fee is on the 32 GPU-hours
    # given back (11-13), not on the hour the outage took
    fee_percent = CancellationRule.objects.get(min_notice_hours=0).fee_percent
    assert cancelled.cancellation_fee == Decimal("96.00") * fee_percent / 100
    assert cancelled.charge == Decimal("48.00") + cancelled.cancellation_fee
    assert placements(cancelled) == [("pool-a", 10, 11, 16)]
    assert ledger_violations() == []


# --- what the tenant sees through the API -------------------------------------------------------


def test_the_api_shows_placements_and_interruptions_of_a_reservation(frozen_now, tenant, pool):
    # given a 16-GPU reservation 09-13; 8 GPUs moved to pool-b 10-12, the rest lost 10-12
    CapacityPoolFactory(slug="pool-b", gpus_per_node=8, node_count=1)
    reservation = book(tenant, booking(gpus=16, start=at(9), hours=4))
    incident = outage(pool, 32, at(10), at(12))

    # when the tenant reads it
    response = tenant_client(tenant).get(f"/api/v1/reservations/{reservation.pk}/")

    # then it keeps its id, pool and price and shows where it runs and what it lost
    assert response.status_code == 200
    data = response.json()
    assert (data["id"], data["pool"], data["gpu_count"]) == (str(reservation.pk), "pool-a", 16)
    assert data["recallable"] is False
    assert [
        (p["pool"], p["start"], p["end"], p["gpus"], p["incident"]) for p in data["placements"]
    ] == [
        ("pool-a", "2026-12-07T09:00:00Z", "2026-12-07T10:00:00Z", 16, None),
        ("pool-b", "2026-12-07T10:00:00Z", "2026-12-07T12:00:00Z", 8, incident.pk),
        ("pool-a", "2026-12-07T12:00:00Z", "2026-12-07T13:00:00Z", 16, None),
    ]
    assert data["interruptions"] == [
        {
            "incident": incident.pk,
            "kind": "outage",
            "start": "2026-12-07T10:00:00Z",
            "end": "2026-12-07T12:00:00Z",
            "gpus": 8,
            "gpu_hours": 16,
        }
    ]
    # and the charge left out the 16 lost GPU-hours (3.00 each)
    assert data["total_price"] == "192.00"
    assert data["charge"] == "144.00"


def test_availability_and_reservations_say_backup_capacity_is_recallable(frozen_now, tenant):
    CapacityPoolFactory(slug="backup", tier="backup", recall_notice_hours=4)
    client = tenant_client(tenant)
    response = client.get(
        "/api/v1/availability/",
        {
            "gpu_model": "h100-sxm-80gb",
            "gpu_count": 8,
            "start": "2026-12-07T09:00:00Z",
            "end": "2026-12-07T13:00:00Z",
        },
    )
    assert response.status_code == 200
    (offer,) = response.json()["results"] if "results" in response.json() else response.json()
    assert (offer["pool"], offer["recallable"], offer["recall_notice_hours"]) == ("backup", True, 4)
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))
    data = client.get(f"/api/v1/reservations/{reservation.pk}/").json()
    assert (data["recallable"], data["recall_notice_hours"]) == (True, 4)
    pool_data = client.get("/api/v1/pools/backup/").json()
    assert (pool_data["recallable"], pool_data["recall_notice_hours"]) == (True, 4)


def test_a_displacement_out_of_time_is_finished_by_the_job(tenant, pool):
    # given four reservations filling pool-a and room on pool-b
    CapacityPoolFactory(slug="pool-b")
    reservations = [book(tenant, booking(gpus=8, start=at(9), hours=2)) for _ in range(4)]

    # when pool-a fails and the caller gives the displacement no time at all
    incident = outage(pool, 32, at(9), at(11), time_budget=0)

    # then nothing has moved yet and the incident is not displaced; the job finishes it
    incident.refresh_from_db()
    assert incident.displaced_at is None
    assert PoolHour.objects.filter(pool=pool, excess__gt=0).count() == 2
    (result,) = incidents_displace_due(now=NOW)
    assert result.reservations == 4
    assert result.remaining_excess == 0
    assert all(placements(r) == [("pool-b", 9, 11, 8)] for r in reservations)
    assert ledger_violations() == []
