"""Every change a tenant cares about records exactly one event for that tenant, in the same
transaction, with the resource as the API shows it. A second tenant, Globex, books in the same
pool throughout: its events never appear in Acme's stream."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction

from billing.models import Invoice
from billing.services.credit_notes import credit_note_create
from billing.services.invoicing import invoice_finalize, invoices_draft
from billing.services.metering import meter_usage
from billing.services.payments import invoice_payment_record, top_up_create
from core.timeutils import HOUR
from events.models import Delivery, Event
from events.services import endpoint_create
from marketplace.models import Reservation, Tenant
from marketplace.services import booking as svc
from marketplace.services.tenants import tenant_set_status
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.marketplace.conftest import MONDAY_9, NOW, booking

pytestmark = pytest.mark.django_db


def book(tenant: Tenant, request: svc.BookingRequest, now=NOW) -> Reservation:
    return svc.reservation_create(
        tenant=tenant, request=request, fingerprint=request.fingerprint(), now=now
    )[0]


def hold(tenant: Tenant, request: svc.BookingRequest, now=NOW) -> Reservation:
    return svc.quote_create(
        tenant=tenant, request=request, fingerprint=request.fingerprint(), now=now
    )[0]


def stream(tenant: Tenant) -> list[tuple[int, str]]:
    return list(
        Event.objects.filter(tenant_id=tenant.pk)
        .order_by("sequence")
        .values_list("sequence", "type")
    )


@pytest.fixture
def pool(db):
    return CapacityPoolFactory(slug="pool-a", gpus_per_node=8, node_count=8)


@pytest.fixture
def acme(db) -> Tenant:
    return TenantFactory(name="Acme", slug="acme")


@pytest.fixture
def globex(db, pool) -> Tenant:
    """Busy in the same pool and hours, with a quote and a booking of its own."""
    globex = TenantFactory(name="Globex", slug="globex")
    book(globex, booking(gpus=16, hours=4))
    hold(globex, booking(gpus=8, hours=2))
    return globex


def test_a_booking_records_reservation_confirmed_with_the_reservation_as_the_api_shows_it(
    pool, acme, globex
):
    reservation = book(acme, booking(gpus=8, hours=4))

    (event,) = Event.objects.filter(tenant_id=acme.pk)
    assert (event.type, event.sequence, event.created_at) == ("reservation.confirmed", 1, NOW)
    assert event.id.startswith("evt_")
    assert event.data["id"] == str(reservation.pk)
    assert {k: event.data[k] for k in ("status", "pool", "gpu_count", "total_price")} == {
        "status": "confirmed",
        "pool": "pool-a",
        "gpu_count": 8,
        "total_price": "96.00",
    }
    assert event.data["start"] == "2026-12-07T09:00:00Z"
    assert stream(globex) == [(1, "reservation.confirmed"), (2, "quote.created")]


def test_a_booking_that_rolls_back_leaves_no_event(pool, acme, globex):
    def book_then_fail() -> None:
        with transaction.atomic():
            book(acme, booking(gpus=8, hours=4))
            raise RuntimeError("the request failed after booking")

    with pytest.raises(RuntimeError):
        book_then_fail()

    assert stream(acme) == []
    assert not Reservation.objects.filter(tenant=acme).exists()


def test_a_refused_booking_records_nothing(pool, acme, globex):
    Tenant.objects.filter(pk=acme.pk).update(credit_limit=Decimal("10.00"))
    acme.refresh_from_db()

    with pytest.raises(svc.CreditLimitExceeded):
        book(acme, booking(gpus=8, hours=4))

    assert stream(acme) == []


def test_a_quote_is_created_confirmed_or_expires(pool, acme, globex):
    confirmed = hold(acme, booking(gpus=8, hours=4))
    lapsing = hold(acme, booking(gpus=8, start=MONDAY_9 + 5 * HOUR, hours=2))
    svc.quote_confirm(tenant=acme, quote_id=confirmed.pk, fingerprint=str(confirmed.pk), now=NOW)

    svc.holds_expire(now=NOW + timedelta(minutes=11))

    assert stream(acme) == [
        (1, "quote.created"),
        (2, "quote.created"),
        (3, "reservation.confirmed"),
        (4, "quote.expired"),
    ]
    expired = Event.objects.get(tenant_id=acme.pk, type="quote.expired")
    assert (expired.data["id"], expired.data["status"]) == (str(lapsing.pk), "expired")
    assert expired.created_at == NOW + timedelta(minutes=11)  # the sweep's time
    assert stream(globex)[-1] == (3, "quote.expired")  # Globex's own lapsed quote


def test_cancel_and_extend_record_their_events_with_the_new_figures(pool, acme, globex):
    reservation = book(acme, booking(gpus=8, hours=4))
    svc.reservation_extend(
        tenant=acme,
        reservation_id=reservation.pk,
        new_end=reservation.end + 2 * HOUR,
        fingerprint="extend",
        now=NOW,
    )
    svc.reservation_cancel(
        tenant=acme, reservation_id=reservation.pk, cancelled_by="acme", reason="done", now=NOW
    )

    assert stream(acme) == [
        (1, "reservation.confirmed"),
        (2, "reservation.extended"),
        (3, "reservation.cancelled"),
    ]
    extended = Event.objects.get(tenant_id=acme.pk, type="reservation.extended")
    cancelled = Event.objects.get(tenant_id=acme.pk, type="reservation.cancelled")
    assert (extended.data["end"], extended.data["total_price"]) == (
        "2026-12-07T15:00:00Z",
        "144.00",
    )
    assert (cancelled.data["status"], cancelled.data["cancellation_reason"]) == (
        "cancelled",
        "done",
    )


def test_the_lifecycle_records_started_ending_soon_and_ended_once_each(pool, acme, globex):
    Tenant.objects.filter(pk=acme.pk).update(ending_soon_lead=timedelta(minutes=30))
    book(acme, booking(gpus=8, hours=4))  # 09:00-13:00

    for moment in ("09:00", "09:10", "12:29", "12:30", "12:45", "13:00", "13:05"):
        hour, minute = map(int, moment.split(":"))
        svc.reservations_advance(now=MONDAY_9.replace(hour=hour, minute=minute))

    assert stream(acme) == [
        (1, "reservation.confirmed"),
        (2, "reservation.started"),
        (3, "reservation.ending_soon"),
        (4, "reservation.ended"),
    ]
    ending = Event.objects.get(tenant_id=acme.pk, type="reservation.ending_soon")
    assert ending.created_at == MONDAY_9.replace(hour=12, minute=30)
    # Globex's reservation (default lead: 1 hour) got its own events, at its own times
    assert [kind for _, kind in stream(globex)] == [
        "reservation.confirmed",
        "quote.created",
        "quote.expired",
        "reservation.started",
        "reservation.ending_soon",
        "reservation.ended",
    ]


def test_balance_low_is_sent_once_when_credit_falls_below_the_threshold_and_rearmed_by_a_top_up(
    pool, acme, globex
):
    Tenant.objects.filter(pk=acme.pk).update(
        credit_limit=Decimal("300.00"), low_balance_threshold=Decimal("100.00")
    )
    acme.refresh_from_db()

    book(acme, booking(gpus=8, hours=4))  # 96.00: 204.00 left
    book(acme, booking(gpus=8, start=MONDAY_9 + 4 * HOUR, hours=5))  # 120.00: 84.00 left
    book(acme, booking(gpus=8, start=MONDAY_9 + 9 * HOUR, hours=1))  # 24.00: 60.00 left
    top_up_create(tenant=acme, amount=Decimal("100.00"), reference="wire-1")  # 160.00
    book(acme, booking(gpus=8, start=MONDAY_9 + 10 * HOUR, hours=3))  # 72.00: 88.00 left

    assert [kind for _, kind in stream(acme)] == [
        "reservation.confirmed",
        "reservation.confirmed",
        "balance.low",
        "reservation.confirmed",
        "reservation.confirmed",
        "balance.low",
    ]
    first_alert = Event.objects.filter(tenant_id=acme.pk, type="balance.low").first()
    assert first_alert.data == {
        "currency": "USD",
        "credit_available": "84.00",
        "low_balance_threshold": "100.00",
        "credit_limit": "300.00",
    }


def test_suspending_a_tenant_records_tenant_suspended(pool, acme, globex):
    tenant_set_status(tenants=Tenant.objects.filter(pk=acme.pk), status="suspended")
    tenant_set_status(tenants=Tenant.objects.filter(pk=acme.pk), status="suspended")

    assert stream(acme) == [(1, "tenant.suspended")]
    assert Event.objects.get(tenant_id=acme.pk).data == {
        "name": "Acme",
        "slug": "acme",
        "status": "suspended",
    }
    assert [kind for _, kind in stream(globex)] == ["reservation.confirmed", "quote.created"]


def test_invoices_and_credit_notes_record_finalized_paid_and_issued(pool, acme, globex):
    from datetime import UTC, datetime

    march = datetime(2026, 3, 2, 10, tzinfo=UTC)
    for tenant in (acme, globex):
        reservation = Reservation.objects.create(
            tenant=tenant,
            pool=pool,
            gpu_count=8,
            start=march,
            end=march + 10 * HOUR,
            capacity_until=march + 10 * HOUR,
            status="completed",
            currency="USD",
            list_price_per_gpu_hour=Decimal("3.0000"),
            unit_price=Decimal("3.0000"),
            total_price=Decimal("240.00"),
            charge=Decimal("240.00"),
        )
        reservation.placements.create(pool=pool, start=march, end=march + 10 * HOUR, gpus=8)
    after_grace = datetime(2026, 4, 3, 1, tzinfo=UTC)
    meter_usage(until=after_grace)
    invoices_draft(now=after_grace)
    invoice = invoice_finalize(invoice_id=Invoice.objects.get(tenant=acme).pk, now=after_grace)
    credit_note_create(
        invoice_id=invoice.pk, amount=Decimal("40.00"), reason="sla", now=after_grace
    )
    invoice_payment_record(invoice_id=invoice.pk, amount=Decimal("200.00"), reference="wire-9")

    types = [kind for _, kind in stream(acme)]
    assert types[-3:] == ["invoice.finalized", "credit_note.issued", "invoice.paid"]
    finalized = Event.objects.get(tenant_id=acme.pk, type="invoice.finalized")
    assert {k: finalized.data[k] for k in ("number", "status", "total", "amount_due")} == {
        "number": "INV-2026-000001",
        "status": "finalized",
        "total": "240.00",
        "amount_due": "240.00",
    }
    note = Event.objects.get(tenant_id=acme.pk, type="credit_note.issued")
    assert {k: note.data[k] for k in ("number", "amount", "invoice_number")} == {
        "number": "CN-2026-000001",
        "amount": "40.00",
        "invoice_number": "INV-2026-000001",
    }
    assert not Event.objects.filter(tenant_id=globex.pk, type__startswith="invoice").exists()


def test_each_event_is_queued_for_each_subscribed_endpoint_of_its_tenant_only(pool, acme, globex):
    everything = endpoint_create(tenant_id=acme.pk, url="http://127.0.0.1:9/all")
    cancels = endpoint_create(
        tenant_id=acme.pk, url="http://127.0.0.1:9/c", event_types=["reservation.cancelled"]
    )
    endpoint_create(tenant_id=globex.pk, url="http://127.0.0.1:9/globex")

    reservation = book(acme, booking(gpus=8, hours=4))
    svc.reservation_cancel(tenant=acme, reservation_id=reservation.pk, cancelled_by="acme", now=NOW)

    assert sorted(
        Delivery.objects.filter(tenant_id=acme.pk).values_list("endpoint_id", "event__type")
    ) == sorted(
        [
            (everything.pk, "reservation.confirmed"),
            (everything.pk, "reservation.cancelled"),
            (cancels.pk, "reservation.cancelled"),
        ]
    )


def test_the_lifecycle_moves_every_due_reservation_in_batches_and_stamps_them(pool, acme, globex):
    # given five of Acme's reservations 09-13 (with Globex's 16 GPUs beside them)
    for _ in range(5):
        book(acme, booking(gpus=8, hours=4))
    at_nine, at_twelve = MONDAY_9, MONDAY_9 + 3 * HOUR

    # when the lifecycle runs in batches of two at 09:00, at 12:00 and at 13:00
    started = svc.reservations_advance(now=at_nine, batch_size=2)
    ending = svc.reservations_advance(now=at_twelve, batch_size=2)
    ended = svc.reservations_advance(now=at_twelve + HOUR, batch_size=2)

    # then every reservation moved (Globex's too), each once, stamped with the run's time
    assert (started["activated"], ending["ending_soon"], ended["completed"]) == (6, 6, 6)
    assert set(
        Reservation.objects.exclude(status="expired").values_list("status", "updated_at")
    ) == {("completed", at_twelve + HOUR)}
    assert set(
        Event.objects.filter(type="reservation.started").values_list("created_at", flat=True)
    ) == {at_nine}
    assert set(
        Event.objects.filter(type="reservation.ended").values_list("created_at", flat=True)
    ) == {at_twelve + HOUR}
    assert Event.objects.filter(tenant_id=acme.pk, type="reservation.ending_soon").count() == 5


def test_only_booked_reservations_are_told_they_end_soon(pool, acme, globex):
    # given a confirmed reservation, a held quote and a cancelled reservation, all 09-13
    book(acme, booking(gpus=8, hours=4))
    hold(acme, booking(gpus=8, hours=4))
    cancelled = book(acme, booking(gpus=8, hours=4))
    svc.reservation_cancel(tenant=acme, reservation_id=cancelled.pk, cancelled_by="acme", now=NOW)

    # when the lifecycle runs within the hour before they end
    svc.reservations_advance(now=MONDAY_9 + 3 * HOUR)

    # then only the booked one is told
    assert Event.objects.filter(tenant_id=acme.pk, type="reservation.ending_soon").count() == 1
