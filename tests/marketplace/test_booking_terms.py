"""Terms fixed at booking, and quotes that end when their window starts.

A reservation keeps the commitment discount and the cancellation schedule in force when it
was booked: later edits of the policy apply to new bookings only, an extension keeps the
booked terms, and the API shows them. A quote is only for a window that starts after now, its
hold never outlasts the start, and confirming it at or after the start is ``quote_expired``.

Time is moved with the services' ``now=`` argument (and the clock, for the API); the default
pool is 4 nodes of 8 GPUs at 3.0000 per GPU-hour, and the policies are the defaults of the
data migration (>= 168 h -10 %; free with 24 h notice, else 50 %)."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine

from capacity.errors import InvalidWindow
from core.timeutils import HOUR
from marketplace.errors import QuoteExpired
from marketplace.models import CancellationRule, CommitmentDiscount, Reservation
from marketplace.services import booking as svc
from tests.marketplace.api_helpers import tenant_client
from tests.marketplace.conftest import MONDAY_9, NOW, booking
from tests.marketplace.test_booking import book, booked, cancel, confirm, extend, hold

pytestmark = pytest.mark.django_db

Status = Reservation.Status
DEFAULT_TERMS = [
    {"min_notice_hours": 24, "fee_percent": "0.00"},
    {"min_notice_hours": 0, "fee_percent": "50.00"},
]
HOUR_IN_PROGRESS = NOW.replace(minute=0)  # 2026-12-01 08:00, it is 08:30


@pytest.fixture(autouse=True)
def default_booking_settings(settings):
    settings.BOOKING_MAX_HOURS = 90 * 24
    settings.BOOKING_HORIZON_DAYS = 365
    settings.QUOTE_HOLD_MINUTES = 10


def late_fee_becomes_total() -> None:
    """The operator's edit: cancelling with less than 24 hours' notice now costs 100 %."""
    CancellationRule.objects.filter(min_notice_hours=0).update(fee_percent=Decimal("100.00"))


# --- terms fixed at booking --------------------------------------------------------------------


def test_a_booking_keeps_the_cancellation_schedule_and_commitment_in_force_when_booked(
    tenant, pool
):
    # when a week (168 h, -10 %) and four hours are booked
    week = book(tenant, booking(gpus=8, start=MONDAY_9, hours=168))
    short = book(tenant, booking(gpus=8, start=MONDAY_9 + 200 * HOUR, hours=4))

    # then each carries the schedule, largest notice first, and its commitment discount
    week.refresh_from_db()
    short.refresh_from_db()
    assert week.cancellation_terms == DEFAULT_TERMS
    assert (week.commitment_percent, week.unit_price) == (Decimal("10.00"), Decimal("2.7000"))
    assert short.cancellation_terms == DEFAULT_TERMS
    assert short.commitment_percent == Decimal("0.00")


def test_a_cancellation_rule_edited_after_booking_does_not_change_the_booked_fee(tenant, pool):
    # given a booking of 96.00 made under "free with 24 h notice, else 50 %"
    before = book(tenant, booking(gpus=8, start=MONDAY_9, hours=4))

    # when the late fee is raised to 100 % and a second booking is made under it
    late_fee_becomes_total()
    after = book(tenant, booking(gpus=8, start=MONDAY_9, hours=4))

    # then, both cancelled with 2 hours' notice, the first pays the 50 % it was booked under and
    # the second the new 100 %
    cancelled_before = cancel(tenant, before, now=MONDAY_9 - 2 * HOUR)
    cancelled_after = cancel(tenant, after, now=MONDAY_9 - 2 * HOUR)
    assert cancelled_before.cancellation_fee == Decimal("48.00")
    assert cancelled_after.cancellation_fee == Decimal("96.00")
    assert cancelled_after.cancellation_terms == [
        {"min_notice_hours": 24, "fee_percent": "0.00"},
        {"min_notice_hours": 0, "fee_percent": "100.00"},
    ]


def test_a_booking_keeps_its_terms_when_the_policy_is_deleted_or_a_rule_added(tenant, pool):
    # given a booking made under the default schedule
    reservation = book(tenant, booking(gpus=8, start=MONDAY_9, hours=4))

    # when the policy is replaced by "always free" plus a new 72 h step
    CancellationRule.objects.all().delete()
    CancellationRule.objects.create(min_notice_hours=72, fee_percent=Decimal("0.00"))

    # then a late cancellation still costs the booked 50 %, and a timely one is still free
    assert svc.cancellation_terms(reservation, MONDAY_9 - HOUR)[2] == Decimal("48.00")
    assert svc.cancellation_terms(reservation, MONDAY_9 - 30 * HOUR)[2] == Decimal("0.00")


def test_a_booking_with_no_schedule_cancels_free_whatever_the_rules_say(tenant, pool):
    # given a booking made when there was no cancellation policy at all
    CancellationRule.objects.all().delete()
    reservation = book(tenant, booking(gpus=8, start=MONDAY_9, hours=4))

    # when a 50 % late fee is introduced afterwards
    CancellationRule.objects.create(min_notice_hours=0, fee_percent=Decimal("50.00"))

    # then cancelling it late is still free
    assert reservation.cancellation_terms == []
    assert cancel(tenant, reservation, now=MONDAY_9 - HOUR).cancellation_fee == Decimal("0.00")


def test_an_extension_keeps_the_booked_terms(tenant, pool):
    # given a week booked at -10 % under the default schedule
    reservation = book(tenant, booking(gpus=8, start=MONDAY_9, hours=168))

    # when the commitment discount and the late fee change, and the booking is extended 2 hours
    CommitmentDiscount.objects.filter(min_hours=168).update(percent=Decimal("30.00"))
    late_fee_becomes_total()
    extended = extend(tenant, reservation, MONDAY_9 + 170 * HOUR)

    # then it keeps its discount, unit price and schedule: 2.70 x 8 GPUs x 170 h
    extended.refresh_from_db()
    assert extended.commitment_percent == Decimal("10.00")
    assert extended.unit_price == Decimal("2.7000")
    assert extended.total_price == Decimal("3672.00")
    assert extended.cancellation_terms == DEFAULT_TERMS
    # and a late cancellation costs the booked 50 % of the hours given back
    assert cancel(tenant, extended, now=MONDAY_9 - HOUR).cancellation_fee == Decimal("1836.00")


def test_the_api_shows_the_booked_terms_after_the_policy_changed(frozen_now, tenant, pool):
    # given a booking made through the API
    api = tenant_client(tenant)
    created = api.post(
        "/api/v1/reservations/",
        {
            "gpu_model": "h100-sxm-80gb",
            "gpu_count": 8,
            "start": "2026-12-07T09:00:00Z",
            "end": "2026-12-07T13:00:00Z",
        },
        format="json",
    )
    assert created.status_code == 201

    # when the policy changes and the reservation is read back
    late_fee_becomes_total()
    response = api.get(f"/api/v1/reservations/{created.json()['id']}/")

    # then it shows the terms it was booked under, each with its notice and fee
    assert response.status_code == 200
    assert created.json()["cancellation_terms"] == DEFAULT_TERMS
    assert response.json()["cancellation_terms"] == DEFAULT_TERMS
    assert response.json()["commitment_percent"] == "0.00"
    assert "cancellation_fee" in response.json()  # every earlier field is still there


def test_the_schema_documents_the_booked_terms(db):
    from django.test import Client

    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    fields = schema["components"]["schemas"]["Reservation"]["properties"]
    assert fields["commitment_percent"]["readOnly"] is True
    assert "booked" in fields["commitment_percent"]["description"]
    assert fields["cancellation_terms"]["readOnly"] is True
    assert "booked" in fields["cancellation_terms"]["description"]


# --- quotes end when their window starts -------------------------------------------------------


def test_a_quote_for_the_hour_in_progress_is_refused_and_it_can_be_booked_directly(tenant, pool):
    # given it is 08:30; when the window 08:00-10:00 is quoted
    with pytest.raises(InvalidWindow) as error:
        hold(tenant, booking(gpus=8, start=HOUR_IN_PROGRESS, hours=2))

    # then it is refused on start, nothing is held, and booking it directly works
    assert error.value.code == "invalid_window"
    assert error.value.fields["start"][0]["code"] == "already_started"
    assert "POST /api/v1/reservations/" in error.value.detail
    assert not Reservation.objects.exists()
    assert book(tenant, booking(gpus=8, start=HOUR_IN_PROGRESS, hours=2)).status == (
        Status.CONFIRMED
    )


def test_a_quote_for_a_window_starting_right_now_is_refused(tenant, pool):
    with pytest.raises(InvalidWindow) as error:
        hold(tenant, booking(gpus=8, start=MONDAY_9, hours=2), now=MONDAY_9)

    assert error.value.fields["start"][0]["code"] == "already_started"


def test_the_api_refuses_to_quote_the_hour_in_progress_with_a_field_code(frozen_now, tenant, pool):
    api = tenant_client(tenant)
    window = {
        "gpu_model": "h100-sxm-80gb",
        "gpu_count": 8,
        "start": "2026-12-01T08:00:00Z",
        "end": "2026-12-01T10:00:00Z",
    }

    quoted = api.post("/api/v1/quotes/", window, format="json")
    booked_at_once = api.post("/api/v1/reservations/", window, format="json")

    assert quoted.status_code == 400
    assert quoted.json()["code"] == "invalid_window"
    assert quoted.json()["fields"]["start"][0]["code"] == "already_started"
    assert booked_at_once.status_code == 201


@pytest.mark.parametrize(
    ("quoted_at", "expires_at"),
    [
        (NOW, NOW + timedelta(minutes=10)),  # 08:30 for 09:00: the full 10 minutes
        (NOW + timedelta(minutes=25), NOW.replace(hour=9, minute=0)),  # 08:55: until 09:00
        (NOW + timedelta(minutes=29, seconds=59), NOW.replace(hour=9, minute=0)),
    ],
)
def test_a_hold_never_expires_after_the_window_starts(tenant, pool, quoted_at, expires_at):
    start = NOW.replace(hour=9, minute=0)

    quote = hold(tenant, booking(gpus=8, start=start, hours=2), now=quoted_at)

    assert quote.hold_expires_at == expires_at
    assert quote.hold_expires_at <= quote.start


def test_a_quote_confirmed_at_its_start_has_expired_and_its_capacity_is_freed(tenant, pool):
    # given a quote made at 08:55 for all 32 GPUs from 09:00
    start = NOW.replace(hour=9, minute=0)
    quote = hold(tenant, booking(gpus=32, start=start, hours=2), now=start - timedelta(minutes=5))

    # when it is confirmed at 09:00 sharp
    with pytest.raises(QuoteExpired) as error:
        confirm(tenant, quote, now=start)

    # then quote_expired (410), expired at the start; the hold is released at no charge
    assert (error.value.code, error.value.status_code) == ("quote_expired", 410)
    assert error.value.extra["expired_at"] == start.isoformat()
    quote.refresh_from_db()
    assert (quote.status, quote.charge, quote.capacity_until) == (
        Status.EXPIRED,
        Decimal("0.00"),
        start,
    )
    assert not any(booked(pool))


def test_a_quote_confirmed_a_second_before_its_start_is_booked(tenant, pool):
    start = NOW.replace(hour=9, minute=0)
    quote = hold(tenant, booking(gpus=8, start=start, hours=2), now=start - timedelta(minutes=5))

    confirmed = confirm(tenant, quote, now=start - timedelta(seconds=1))

    assert confirmed.status == Status.CONFIRMED


def test_an_older_hold_that_outlasts_its_start_cannot_be_confirmed_after_it(tenant, pool):
    # given a quote held, as before holds ended at the start, until 10 minutes past it
    start = NOW.replace(hour=9, minute=0)
    quote = hold(tenant, booking(gpus=8, start=start, hours=1), now=start - timedelta(minutes=5))
    Reservation.objects.filter(pk=quote.pk).update(hold_expires_at=start + timedelta(minutes=5))

    # when it is confirmed 4 minutes into its hour, before the hold says it lapses
    with pytest.raises(QuoteExpired) as error:
        confirm(tenant, quote, now=start + timedelta(minutes=4))

    # then it has expired at the start
    assert error.value.extra["expired_at"] == start.isoformat()
    quote.refresh_from_db()
    assert quote.status != Status.CONFIRMED


def test_the_api_answers_410_to_a_quote_confirmed_after_its_window_started(tenant, pool):
    # given a quote made through the API at 08:55 for 09:00-10:00, held until 09:00
    api = tenant_client(tenant)
    window = {
        "gpu_model": "h100-sxm-80gb",
        "gpu_count": 32,
        "start": "2026-12-01T09:00:00Z",
        "end": "2026-12-01T10:00:00Z",
    }
    with time_machine.travel(NOW + timedelta(minutes=25), tick=False):
        quote = api.post("/api/v1/quotes/", window, format="json").json()
    assert quote["expires_at"] == "2026-12-01T09:00:00Z"

    # when it is confirmed at 09:04
    with time_machine.travel(NOW + timedelta(minutes=34), tick=False):
        response = api.post("/api/v1/reservations/", {"quote": quote["id"]}, format="json")
        again = api.get(f"/api/v1/reservations/{quote['id']}/")

    # then 410 quote_expired, and the quote is expired with its GPUs free again
    assert response.status_code == 410
    assert response.json()["code"] == "quote_expired"
    assert again.json()["status"] == "expired"
    assert not any(booked(pool))
