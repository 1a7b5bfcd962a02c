"""The incident screen: operators record incidents (which moves the reservations they hit),
confirm planned maintenance that displaces bookings, see what an incident did, close it and
re-run its displacement; the displacement policy and move log have their own pages.

The clock is frozen at NOW (2026-12-01 08:30 UTC); bookings are on Monday 2026-12-07 from
09:00. pool-a has 32 GPUs (4 nodes of 8)."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from billing.models import SlaCredit
from capacity import services as capacity_services
from capacity.models import CapacityPool, Incident, PoolHour
from capacity.selectors import capacity_for_hours
from marketplace import admin as marketplace_admin
from marketplace.admin import IncidentRecordForm
from marketplace.models import Displacement, DisplacementRule
from marketplace.services.displacement import incident_record, policy_order
from tests.admin_helpers import form_values, headings, rows, titled_tables
from tests.factories import CapacityPoolFactory
from tests.marketplace.conftest import MONDAY_9, NOW, booking
from tests.marketplace.test_booking import book
from tests.marketplace.test_concurrency import ledger_violations
from tests.marketplace.test_incidents import placements
from tests.sqlite_helpers import run_on_sqlite

pytestmark = pytest.mark.django_db

ADD = "/admin/capacity/incident/add/"
CHANGELIST = "/admin/capacity/incident/"
PREVIEW = "Reservations this maintenance would displace"


def at(hour: int) -> datetime:
    return MONDAY_9.replace(hour=hour)


OUT_FROM, BACK_FROM = at(11), at(13)


def change_url(incident: Incident) -> str:
    return f"/admin/capacity/incident/{incident.pk}/change/"


def shown(moment: datetime | None) -> dict[str, str]:
    """A datetime as an admin form posts it (split date and time), or empty."""
    if moment is None:
        return {"0": "", "1": ""}
    return {"0": f"{moment:%Y-%m-%d}", "1": f"{moment:%H:%M:%S}"}


def incident_form(
    pool: CapacityPool,
    kind: str = "outage",
    gpus: int = 32,
    start: datetime = OUT_FROM,
    end: datetime | None = BACK_FROM,
    **extra: str,
) -> dict[str, str]:
    return {
        "pool": str(pool.pk),
        "kind": kind,
        "gpus": str(gpus),
        **{f"start_{part}": value for part, value in shown(start).items()},
        **{f"end_{part}": value for part, value in shown(end).items()},
        "reason": "PDU failure",
        **extra,
    }


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def form_errors(response) -> dict[str, list[str]]:
    form = response.context["adminform"].form
    return {name: [str(error) for error in errors] for name, errors in form.errors.items()}


def capacity(pool: CapacityPool) -> list[int]:
    return list(PoolHour.objects.filter(pool=pool).values_list("capacity", flat=True))


@pytest.fixture
def admin(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def pool_b(db) -> CapacityPool:
    return CapacityPoolFactory(slug="pool-b", gpus_per_node=8, node_count=4)


# --- recording ---------------------------------------------------------------------------------


def test_an_outage_over_booked_gpus_recorded_in_the_admin_moves_the_reservation(
    admin, frozen_now, tenant, pool, pool_b
):
    # given 8 GPUs booked on pool-a 09-13, and room on pool-b
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))

    # when the operator records all of pool-a out 11-13
    response = admin.post(ADD, incident_form(pool, gpus=32), follow=True)

    # then the incident is recorded by them, the reservation runs on pool-b 11-13, and the
    # operator lands on the incident's page, told what moved
    incident = Incident.objects.get()
    assert (incident.kind, incident.gpus, incident.start, incident.end) == (
        "outage",
        32,
        at(11),
        at(13),
    )
    assert (incident.recorded_by, incident.reason) == ("op", "PDU failure")
    assert incident.displaced_at == NOW
    assert placements(reservation) == [("pool-a", 9, 11, 8), ("pool-b", 11, 13, 8)]
    assert response.redirect_chain == [(change_url(incident), 302)]
    assert messages_of(response) == [
        f"Outage #{incident.pk} on pool-a recorded: 1 reservation(s) displaced, "
        "16 GPU-hours moved to other pools, 0 GPU-hours lost."
    ]
    assert ledger_violations() == []


def test_an_open_outage_of_idle_gpus_is_recorded_and_says_nothing_was_affected(
    admin, frozen_now, tenant, pool
):
    book(tenant, booking(gpus=8, start=at(9), hours=4))

    response = admin.post(ADD, incident_form(pool, gpus=8, start=at(9), end=None), follow=True)

    incident = Incident.objects.get()
    assert incident.end is None
    assert capacity(pool) == [24, 24, 24, 24]
    assert messages_of(response) == [
        f"Outage #{incident.pk} on pool-a recorded: no reservation was affected."
    ]


def test_maintenance_that_would_displace_bookings_is_recorded_only_once_confirmed(
    admin, frozen_now, tenant, pool
):
    # given all 32 GPUs of pool-a booked 09-13 and no other pool
    reservation = book(tenant, booking(gpus=32, start=at(9), hours=4))
    form = incident_form(pool, kind="maintenance", gpus=8, start=at(10), end=at(12))

    # when the operator asks for maintenance of one node 10-12
    asked = admin.post(ADD, form)

    # then nothing is recorded: the form comes back listing who would lose GPUs, asking to
    # confirm
    assert asked.status_code == 200
    assert not Incident.objects.exists()
    assert capacity(pool) == [32, 32, 32, 32]
    assert titled_tables(asked)[PREVIEW] == [
        {
            "Reservation": str(reservation.pk),
            "Tenant": tenant.name,
            "Start": "Dec. 7, 2026, 9 a.m.",
            "End": "Dec. 7, 2026, 1 p.m.",
            "GPUs booked": "32",
            "GPUs lost per hour (most)": "8",
        }
    ]
    assert form_errors(asked) == {
        "confirm_displacement": [
            "This maintenance takes booked GPUs from 1 reservation(s), listed above: they move "
            "to other pools where there is room and lose those GPUs for its hours where there "
            "is none. Tick to record it anyway."
        ]
    }
    assert form_values(asked)["confirm_displacement"] == ""
    digest = asked.context["adminform"].form["preview_digest"].value()
    assert digest

    # when they confirm
    confirmed = admin.post(
        ADD, {**form, "confirm_displacement": "on", "preview_digest": digest}, follow=True
    )

    # then it is recorded and the reservation loses one node for those two hours
    incident = Incident.objects.get()
    assert (incident.kind, incident.gpus) == ("maintenance", 8)
    assert placements(reservation) == [
        ("pool-a", 9, 10, 32),
        ("pool-a", 10, 12, 24),
        ("pool-a", 12, 13, 32),
    ]
    assert messages_of(confirmed) == [
        f"Planned maintenance #{incident.pk} on pool-a recorded: 1 reservation(s) displaced, "
        "0 GPU-hours moved to other pools, 16 GPU-hours lost."
    ]
    assert ledger_violations() == []


def test_the_admin_records_a_confirmed_maintenance_once_within_its_time_budget(
    admin, frozen_now, tenant, pool, settings, monkeypatch
):
    # given all 32 GPUs of pool-a booked 09-13, and a time budget for the screen
    book(tenant, booking(gpus=32, start=at(9), hours=4))
    settings.INCIDENT_ADMIN_DISPLACE_SECONDS = 2.5
    calls = []

    def recording(**kwargs):
        calls.append(kwargs)
        return incident_record(**kwargs)

    monkeypatch.setattr(marketplace_admin, "incident_record", recording)
    form = incident_form(pool, kind="maintenance", gpus=8, start=at(10), end=at(12))

    # when the operator asks, is shown the list and confirms it
    asked = admin.post(ADD, form)
    digest = asked.context["adminform"].form["preview_digest"].value()
    assert (asked.status_code, calls) == (200, [])  # asking records nothing
    confirmed = admin.post(ADD, {**form, "confirm_displacement": "on", "preview_digest": digest})

    # then the service recorded it once, by that operator, within the screen's time budget
    assert confirmed.status_code == 302
    assert [(call["recorded_by"], call["time_budget"]) for call in calls] == [("op", 2.5)]
    assert Incident.objects.count() == 1


def test_the_incident_form_only_validates(frozen_now, tenant, pool):
    # given 8 GPUs booked on pool-a 09-13
    book(tenant, booking(gpus=8, start=at(9), hours=4))
    form = IncidentRecordForm(
        data={
            "pool": pool.pk,
            "kind": "outage",
            "gpus": 32,
            "start": at(11).isoformat(),
            "end": at(13).isoformat(),
            "reason": "PDU failure",
        }
    )

    # when a valid incident form is validated, nothing is recorded: the admin does that
    assert form.is_valid(), form.errors
    assert not Incident.objects.exists()
    assert capacity(pool) == [32, 32, 32, 32]


@pytest.mark.parametrize("confirmation", ["never shown", "shown for other input"])
def test_a_confirmation_counts_only_for_the_displacement_that_was_shown(
    admin, frozen_now, tenant, pool, confirmation
):
    book(tenant, booking(gpus=32, start=at(9), hours=4))
    form = incident_form(pool, kind="maintenance", gpus=8, start=at(10), end=at(12))
    digest = ""
    if confirmation == "shown for other input":
        digest = admin.post(ADD, form).context["adminform"].form["preview_digest"].value()
        form["gpus"] = "16"  # changed after the list was shown

    response = admin.post(ADD, {**form, "confirm_displacement": "on", "preview_digest": digest})

    assert response.status_code == 200
    assert list(form_errors(response)) == ["confirm_displacement"]
    assert not Incident.objects.exists()


def test_maintenance_that_displaces_nobody_is_recorded_at_once(admin, frozen_now, tenant, pool):
    # given 8 of pool-a's 32 GPUs booked
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))

    # when one node goes into maintenance (24 left for 8 booked)
    response = admin.post(
        ADD, incident_form(pool, kind="maintenance", gpus=8, start=at(10), end=at(12)), follow=True
    )

    # then it is recorded without asking, and the reservation is untouched
    incident = Incident.objects.get()
    assert incident.kind == "maintenance"
    assert response.redirect_chain == [(change_url(incident), 302)]
    assert capacity(pool) == [32, 24, 24, 32]
    assert placements(reservation) == [("pool-a", 9, 13, 8)]
    assert messages_of(response) == [
        f"Planned maintenance #{incident.pk} on pool-a recorded: no reservation was affected."
    ]


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        (
            {"start": at(11), "end": at(10)},
            {
                "__all__": ["The incident must end after it starts."],
                "end": ["Must be after start."],
            },
        ),
        (
            {"gpus": 0},
            {
                "__all__": ["An incident takes between 1 and the pool's 32 GPUs."],
                "gpus": ["1..32."],
            },
        ),
        (
            {"kind": "maintenance", "gpus": 0},
            {
                "__all__": ["An incident takes between 1 and the pool's 32 GPUs."],
                "gpus": ["1..32."],
            },
        ),
        (
            {"start": at(11) + timedelta(minutes=30)},
            {
                "__all__": ["Incidents start and end on whole UTC hours."],
                "start": ["Must fall on a whole UTC hour."],
            },
        ),
        (
            {"kind": "maintenance", "start": NOW - timedelta(days=1, minutes=30)},
            {
                "__all__": [
                    "Planned maintenance cannot start in the past; record an outage instead."
                ],
                "start": ["Not before the current hour."],
            },
        ),
        (
            {"kind": "recall"},
            {
                "__all__": [
                    "Only backup capacity is sold as recallable; record a provider reclaim or an "
                    "outage for a primary pool."
                ],
                "kind": ["Pool is not backup tier."],
            },
        ),
    ],
    ids=["end-before-start", "no-gpus", "maintenance-no-gpus", "off-the-hour", "past", "recall"],
)
def test_input_the_service_refuses_is_shown_on_the_form_and_nothing_is_recorded(
    admin, frozen_now, tenant, pool, fields, errors
):
    book(tenant, booking(gpus=32, start=at(9), hours=4))

    response = admin.post(ADD, incident_form(pool, **fields))

    assert response.status_code == 200
    assert form_errors(response) == errors
    assert not Incident.objects.exists()
    assert capacity(pool) == [32, 32, 32, 32]


def test_a_recall_with_notice_is_recorded_and_moves_nothing_yet(admin, frozen_now, tenant):
    backup = CapacityPoolFactory(slug="backup", tier="backup", recall_notice_hours=2)
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))
    assert reservation.pool == backup

    response = admin.post(ADD, incident_form(backup, kind="recall", gpus=32, end=None), follow=True)

    incident = Incident.objects.get()
    assert not incident.short_notice
    assert incident.displaced_at is None
    assert placements(reservation) == [("backup", 9, 13, 8)]
    assert messages_of(response) == [
        f"Backup recall #{incident.pk} on backup recorded: 1 reservation(s) notified; their "
        "GPUs are moved when it starts, at 2026-12-07 11:00 UTC."
    ]


# --- what an incident did ----------------------------------------------------------------------


@pytest.fixture
def displaced(frozen_now, tenant, pool):
    """Two reservations of 16 GPUs on pool-a 09-13; pool-b has one node (8 GPUs). All of pool-a
    fails 11-13: the later one gets 8 GPUs moved to pool-b and loses 8, the earlier one loses
    16; SLA credits of 12.50 and 4.00 were given for it."""
    CapacityPoolFactory(slug="pool-b", gpus_per_node=8, node_count=1)
    early = book(tenant, booking(gpus=16, start=at(9), hours=4), now=NOW)
    late = book(tenant, booking(gpus=16, start=at(9), hours=4), now=NOW + timedelta(minutes=1))
    incident = incident_record(
        pool=pool, kind="outage", gpus=32, start=at(11), end=at(13), reason="PDU failure", now=NOW
    )
    for reservation, amount in ((early, "12.50"), (late, "4.00")):
        SlaCredit.objects.create(
            reservation=reservation,
            tenant=tenant,
            period_start=datetime(2026, 12, 1, tzinfo=NOW.tzinfo),
            incident=incident,
            promised_gpu_hours=64,
            delivered_gpu_hours=32,
            credit_percent=Decimal("10.00"),
            amount=Decimal(amount),
            currency="USD",
            created_at=NOW,
        )
    return {"incident": incident, "early": early, "late": late}


def test_the_change_page_shows_what_the_incident_did(admin, displaced, tenant):
    incident = displaced["incident"]

    response = admin.get(change_url(incident))

    assert headings(response)["h1"] == "Change incident"
    assert form_values(response) == {
        "pool": "pool-a",
        "kind": "Outage",
        "gpus": "32",
        "start": "Dec. 7, 2026, 11 a.m.",
        "until": "Dec. 7, 2026, 1 p.m.",
        "reason": "PDU failure",
        "reservations_affected": "2",
        "gpu_hours_moved": "16",  # 8 GPUs x 2 h
        "gpu_hours_lost": "48",  # (8 + 16) GPUs x 2 h
        "sla_credited": "16.50 USD",
        "short_notice": "False",
        "recorded_by": "-",
        "created_at": "Dec. 1, 2026, 8:30 a.m.",
        "closed_at": "-",
        "displaced_at": "Dec. 1, 2026, 8:30 a.m.",
    }
    window = {"start": "Dec. 7, 2026, 11 a.m.", "end": "Dec. 7, 2026, 1 p.m."}
    assert sorted(rows(response, "displacements-group"), key=lambda row: row["gpus_moved"]) == [
        {
            "reservation_link": str(displaced["early"].pk),
            "tenant": tenant.name,
            **window,
            "gpus_taken": "16",
            "gpus_moved": "0",
            "gpus_lost": "16",
        },
        {
            "reservation_link": str(displaced["late"].pk),
            "tenant": tenant.name,
            **window,
            "gpus_taken": "16",
            "gpus_moved": "8",
            "gpus_lost": "8",
        },
    ]
    # closed incidents' hours are over: no close button; displaced: no re-run button
    assert b"Close now" in response.content
    assert b"Displace again" not in response.content


def test_the_incident_list_shows_the_figures_in_one_query_for_any_number_of_incidents(
    admin, displaced, pool
):
    incident = displaced["incident"]

    with CaptureQueriesContext(connection) as one:
        response = admin.get(CHANGELIST)
    assert rows(response) == [
        {
            "id": str(incident.pk),
            "pool": "pool-a",
            "kind": "Outage",
            "gpus": "32",
            "start": "Dec. 7, 2026, 11 a.m.",
            "until": "Dec. 7, 2026, 1 p.m.",
            "short_notice": "False",
            "displaced_at": "Dec. 1, 2026, 8:30 a.m.",
            "reservations_affected": "2",
            "gpu_hours_moved": "16",
            "gpu_hours_lost": "48",
            "sla_credited": "16.50 USD",
        }
    ]

    for hour in (14, 16, 18):
        incident_record(pool=pool, kind="outage", gpus=8, start=at(hour), end=at(hour + 1), now=NOW)
    with CaptureQueriesContext(connection) as four:
        response = admin.get(CHANGELIST)
    assert [row["until"] for row in rows(response)] == [
        "Dec. 7, 2026, 7 p.m.",
        "Dec. 7, 2026, 5 p.m.",
        "Dec. 7, 2026, 3 p.m.",
        "Dec. 7, 2026, 1 p.m.",
    ]
    assert [row["sla_credited"] for row in rows(response)] == ["-", "-", "-", "16.50 USD"]
    assert len(four) == len(one)


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ({"state": "open"}, ["open"]),
        ({"state": "closed"}, ["Dec. 7, 2026, 1 p.m."]),
        ({"kind__exact": "maintenance"}, ["Dec. 7, 2026, 1 p.m."]),
        ({"q": "cooling"}, ["open"]),
        ({"q": "pool-b"}, ["open"]),
    ],
)
def test_incidents_are_filtered_by_state_and_kind_and_searched(
    admin, frozen_now, pool, pool_b, query, found
):
    incident_record(pool=pool, kind="maintenance", gpus=8, start=at(11), end=at(13), now=NOW)
    incident_record(pool=pool_b, kind="outage", gpus=8, start=at(9), reason="cooling", now=NOW)

    response = admin.get(CHANGELIST, query)

    assert [row["until"] for row in rows(response)] == found


def test_only_the_reason_of_a_recorded_incident_can_be_changed(admin, displaced):
    incident = displaced["incident"]

    response = admin.post(
        change_url(incident),
        {
            "reason": "Cooling failure in hall 2",
            "gpus": "8",
            "displacements-TOTAL_FORMS": "2",
            "displacements-INITIAL_FORMS": "2",
        },
    )

    assert response.status_code == 302
    incident.refresh_from_db()
    assert (incident.reason, incident.gpus) == ("Cooling failure in hall 2", 32)


def test_incidents_cannot_be_deleted(admin, displaced):
    incident = displaced["incident"]
    response = admin.post(f"/admin/capacity/incident/{incident.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert Incident.objects.filter(pk=incident.pk).exists()


# --- closing and displacing again --------------------------------------------------------------


@pytest.fixture
def open_outage(frozen_now, tenant, pool) -> Incident:
    """Half of pool-a out since 08:00 today (the hour in progress), still open."""
    return incident_record(pool=pool, kind="outage", gpus=16, start=NOW.replace(minute=0), now=NOW)


def test_the_close_action_ends_an_open_incident_at_the_next_whole_hour(admin, open_outage):
    response = admin.post(
        CHANGELIST, {"action": "close_now", "_selected_action": [open_outage.pk]}, follow=True
    )

    open_outage.refresh_from_db()
    assert (open_outage.end, open_outage.closed_at) == (NOW.replace(hour=9, minute=0), NOW)
    assert messages_of(response) == [
        f"Incident #{open_outage.pk} closed: pool-a's GPUs are back from 2026-12-01 09:00 UTC."
    ]

    # closing it again changes nothing and says so
    again = admin.post(
        CHANGELIST, {"action": "close_now", "_selected_action": [open_outage.pk]}, follow=True
    )
    assert messages_of(again) == [f"Incident #{open_outage.pk} is already over."]


def test_the_close_button_on_the_incident_page_closes_it(admin, open_outage):
    page = admin.get(change_url(open_outage))
    assert b"Close now" in page.content

    response = admin.post(f"/admin/capacity/incident/{open_outage.pk}/close/", follow=True)

    assert response.redirect_chain == [(change_url(open_outage), 302)]
    open_outage.refresh_from_db()
    assert open_outage.end == NOW.replace(hour=9, minute=0)
    assert b"Close now" not in response.content
    assert admin.get(f"/admin/capacity/incident/{open_outage.pk}/close/").status_code == 405


def test_closing_maintenance_that_has_not_begun_withdraws_it(admin, frozen_now, pool):
    incident = incident_record(
        pool=pool, kind="maintenance", gpus=8, start=at(10), end=at(12), now=NOW
    )

    response = admin.post(
        CHANGELIST, {"action": "close_now", "_selected_action": [incident.pk]}, follow=True
    )

    incident.refresh_from_db()
    assert incident.end == incident.start == at(10)
    assert capacity_for_hours(pool, [at(10), at(11)]) == {at(10): 32, at(11): 32}
    assert messages_of(response) == [f"Incident #{incident.pk} withdrawn before it began."]


def test_displace_again_moves_what_an_incident_left_booked(admin, frozen_now, tenant, pool, pool_b):
    # given an incident recorded on the capacity side only: its excess was never moved
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))
    incident = capacity_services.incident_open(
        pool=pool, kind="outage", gpus=32, start=at(11), end=at(13), now=NOW
    )
    assert incident.displaced_at is None
    assert b"Displace again" in admin.get(change_url(incident)).content

    # when the operator displaces it again
    response = admin.post(
        CHANGELIST, {"action": "displace_again", "_selected_action": [incident.pk]}, follow=True
    )

    # then the reservation runs on pool-b for those hours and the incident is done
    assert placements(reservation) == [("pool-a", 9, 11, 8), ("pool-b", 11, 13, 8)]
    incident.refresh_from_db()
    assert incident.displaced_at == NOW
    assert messages_of(response) == [
        f"Incident #{incident.pk}: 1 reservation(s) displaced, 16 GPU-hours moved to other "
        "pools, 0 GPU-hours lost."
    ]
    assert ledger_violations() == []


def test_displace_again_leaves_a_recall_alone_until_it_starts(admin, frozen_now, tenant):
    backup = CapacityPoolFactory(slug="backup", tier="backup")
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))
    CapacityPoolFactory(slug="pool-b")  # room to move to, were it displaced now
    recall = incident_record(pool=backup, kind="recall", gpus=32, start=at(11), now=NOW)
    assert b"Displace again" not in admin.get(change_url(recall)).content

    response = admin.post(
        CHANGELIST, {"action": "displace_again", "_selected_action": [recall.pk]}, follow=True
    )

    assert placements(reservation) == [("backup", 9, 13, 8)]
    assert messages_of(response) == [
        f"Recall #{recall.pk} is not due: its reservations are moved when it starts, at "
        "2026-12-07 11:00 UTC."
    ]


# --- the policy, the move log, and reservations ------------------------------------------------


def test_the_displacement_policy_is_listed_and_its_positions_can_be_swapped(admin):
    recallable, latest = DisplacementRule.objects.order_by("position")

    listed = admin.get("/admin/marketplace/displacementrule/")
    assert [row["order"] for row in rows(listed)] == [
        "Recallable (backup) reservations first",
        "Most recently confirmed first",
    ]
    assert {k: v for k, v in form_values(listed).items() if k.endswith("position")} == {
        "form-0-position": "1",
        "form-1-position": "2",
    }

    response = admin.post(
        "/admin/marketplace/displacementrule/",
        {
            "form-TOTAL_FORMS": "2",
            "form-INITIAL_FORMS": "2",
            "form-0-id": str(recallable.pk),
            "form-0-position": "2",
            "form-1-id": str(latest.pk),
            "form-1-position": "1",
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    assert list(DisplacementRule.objects.values_list("order", "position")) == [
        ("latest_confirmed_first", 1),
        ("recallable_first", 2),
    ]
    assert len(policy_order()) == 4  # two rules, each one term, plus the two tie-breaks


def test_two_rules_cannot_be_given_the_same_position(admin):
    recallable, latest = DisplacementRule.objects.order_by("position")

    response = admin.post(
        "/admin/marketplace/displacementrule/",
        {
            "form-TOTAL_FORMS": "2",
            "form-INITIAL_FORMS": "2",
            "form-0-id": str(recallable.pk),
            "form-0-position": "3",
            "form-1-id": str(latest.pk),
            "form-1-position": "3",
            "_save": "Save",
        },
    )

    assert response.status_code == 200
    assert "Position 3 is given to more than one rule." in response.content.decode()
    assert list(DisplacementRule.objects.values_list("position", flat=True)) == [1, 2]


def test_a_new_rule_at_a_taken_position_moves_that_rule_to_the_end(admin):
    response = admin.post(
        "/admin/marketplace/displacementrule/add/", {"position": "1", "order": "largest_first"}
    )

    assert response.status_code == 302
    assert list(DisplacementRule.objects.values_list("order", "position")) == [
        ("largest_first", 1),
        ("latest_confirmed_first", 2),
        ("recallable_first", 3),
    ]


def test_the_move_log_is_read_only_filtered_by_kind_and_searched_by_reservation(admin, displaced):
    early = displaced["early"]

    everything = admin.get("/admin/marketplace/displacement/")
    outages = admin.get("/admin/marketplace/displacement/", {"incident__kind__exact": "outage"})
    recalls = admin.get("/admin/marketplace/displacement/", {"incident__kind__exact": "recall"})
    searched = admin.get("/admin/marketplace/displacement/", {"q": str(early.pk)})

    assert len(rows(everything)) == len(rows(outages)) == 2
    assert recalls.context["cl"].result_count == 0
    assert [(row["reservation"], row["gpus_lost"]) for row in rows(searched)] == [
        (str(early), "16")
    ]
    assert admin.get("/admin/marketplace/displacement/add/").status_code == 403
    displacement = Displacement.objects.first()
    change = admin.get(f"/admin/marketplace/displacement/{displacement.pk}/change/")
    assert headings(change)["h1"] == "View displacement"


def test_a_reservation_page_shows_its_placements_and_displacements(admin, displaced):
    late = displaced["late"]
    incident = displaced["incident"]

    response = admin.get(f"/admin/marketplace/reservation/{late.pk}/change/")

    assert rows(response, "placements-group") == [
        {
            "pool": "pool-a",
            "start": "Dec. 7, 2026, 9 a.m.",
            "end": "Dec. 7, 2026, 11 a.m.",
            "gpus": "16",
            "incident": "-",
        },
        {
            "pool": "pool-b",
            "start": "Dec. 7, 2026, 11 a.m.",
            "end": "Dec. 7, 2026, 1 p.m.",
            "gpus": "8",
            "incident": str(incident),
        },
    ]
    assert rows(response, "displacements-group") == [
        {
            "incident": str(incident),
            "start": "Dec. 7, 2026, 11 a.m.",
            "end": "Dec. 7, 2026, 1 p.m.",
            "gpus_taken": "16",
            "gpus_moved": "8",
            "gpus_lost": "8",
            "created_at": "Dec. 1, 2026, 8:30 a.m.",
        }
    ]


def test_the_incident_list_works_on_the_sqlite_development_setup(tmp_path):
    """`make run` uses SQLite: the figures' hours are computed there with other SQL."""
    script = """
        import django
        django.setup()
        from datetime import UTC, datetime, timedelta
        from decimal import Decimal
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.test import Client
        from django.test.utils import setup_test_environment
        from capacity.models import CapacityPool, GpuModel, Provider, Region
        from marketplace.models import Displacement, PoolPrice
        from marketplace.services.booking import BookingRequest, reservation_create
        from marketplace.services.displacement import incident_record
        from marketplace.services.tenants import tenant_create
        from tests.admin_helpers import rows

        setup_test_environment()
        call_command("migrate", verbosity=0)
        now = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
        start = datetime(2026, 12, 7, 9, tzinfo=UTC)
        provider = Provider.objects.create(name="P", slug="p", kind="owned")
        region = Region.objects.create(provider=provider, code="r", name="R", country="US")
        model = GpuModel.objects.create(slug="h100-sxm-80gb", vendor="nvidia", name="H100",
                                        memory_gb=80)
        pools = [
            CapacityPool.objects.create(
                slug=slug, region=region, gpu_model=model, gpus_per_node=8, node_count=nodes,
                available_from=now - timedelta(days=30), available_until=now + timedelta(days=90),
                cost_per_gpu_hour=Decimal(cost),
            )
            for slug, nodes, cost in (("pool-a", 2, "1"), ("pool-b", 1, "2"))
        ]
        for pool in pools:
            PoolPrice.objects.create(pool=pool, currency="USD", price_per_gpu_hour=Decimal("3"))
        tenant = tenant_create(name="Smoke", credit_limit=Decimal("100000"))
        request = BookingRequest(gpu_model="h100-sxm-80gb", gpu_count=16, start=start,
                                 end=start + timedelta(hours=4))
        reservation_create(tenant=tenant, request=request, fingerprint=request.fingerprint(),
                           now=now)
        incident_record(pool=pools[0], kind="outage", gpus=16, start=start + timedelta(hours=1),
                        end=start + timedelta(hours=3), now=now)
        print(list(Displacement.objects.values_list("gpus_moved", "gpus_lost")))
        client = Client()
        client.force_login(get_user_model().objects.create_superuser("op", "op@x.io", "pw"))
        for row in rows(client.get("/admin/capacity/incident/")):
            print(row["reservations_affected"], row["gpu_hours_moved"], row["gpu_hours_lost"],
                  row["sla_credited"])
        """
    result = run_on_sqlite(script, tmp_path)

    assert result.returncode == 0, result.stderr
    # 16 GPUs out for 2 hours: one node (8 GPUs) finds room on pool-b, one is lost
    assert result.stdout.splitlines() == ["[(8, 8)]", "1 16 16 -"]
