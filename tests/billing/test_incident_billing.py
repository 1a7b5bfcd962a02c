"""Incidents end to end, through the real services: book, record the incident, run the billing
jobs as the schedule does, and read the invoices and credit notes.

Bookings are made on 2026-12-01 for Monday 2026-12-07; December is closed (finalized) on
2027-01-03, after the grace period."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from billing.models import CreditNote, Invoice, SlaCredit, UsageRecord
from billing.tasks import draft_invoices_task, finalize_invoices_task, meter_usage_task
from capacity.models import CapacityPool, Incident
from marketplace.models import Reservation, Tenant
from marketplace.services.displacement import incident_record
from tests.factories import CapacityPoolFactory, TenantFactory
from tests.marketplace.conftest import booking
from tests.marketplace.test_booking import book
from tests.marketplace.test_concurrency import ledger_violations

pytestmark = pytest.mark.django_db

BOOKED = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
DAY = datetime(2026, 12, 7, tzinfo=UTC)
CLOSE = datetime(2027, 1, 3, 2, tzinfo=UTC)


def at(hour: int) -> datetime:
    return DAY.replace(hour=hour)


def meter(until: datetime) -> None:
    """The metering task as the schedule runs it at ``until`` (it never meters past now)."""
    with time_machine.travel(until, tick=False):
        meter_usage_task(until=until.isoformat())


def close_december(now: datetime = CLOSE) -> None:
    """What the schedule runs: meter (and correct), draft, finalize (and SLA credits)."""
    meter(now)
    draft_invoices_task(now=now.isoformat())
    finalize_invoices_task(now=now.isoformat())


def december_invoice(tenant: Tenant) -> Invoice:
    return Invoice.objects.get(tenant=tenant, period_start=datetime(2026, 12, 1, tzinfo=UTC))


def outage(pool: CapacityPool, gpus: int, start: datetime, end: datetime, now: datetime):
    return incident_record(
        pool=pool, kind=Incident.Kind.OUTAGE, gpus=gpus, start=start, end=end, now=now
    )


@pytest.fixture
def pool(db) -> CapacityPool:
    return CapacityPoolFactory(slug="pool-a", gpus_per_node=8, node_count=4)  # 32 GPUs


@pytest.fixture
def twins(db) -> tuple[Tenant, Tenant]:
    """Two tenants with the same terms: one is hit by the incident, the other is the control."""
    return TenantFactory(slug="hit"), TenantFactory(slug="control")


def test_a_moved_reservation_is_invoiced_as_if_nothing_had_happened(twins, pool):
    # given the same 16-GPU booking 09-17 for two tenants, one on pool-a and one on pool-c,
    # and a dearer pool-b with room
    hit, control = twins
    other = CapacityPoolFactory(slug="pool-b", price_per_gpu_hour=Decimal("5.0000"))
    CapacityPoolFactory(slug="pool-c", price_per_gpu_hour=Decimal("4.0000"))
    moved = book(hit, booking(gpus=16, start=at(9), hours=8), now=BOOKED)
    book(control, booking(gpus=16, start=at(9), hours=8, pool="pool-c"), now=BOOKED)

    # when all of pool-a fails 11-14 (recorded ahead) and December is closed
    outage(pool, 32, at(11), at(14), now=BOOKED)
    close_december()

    # then the moved reservation ran 3 hours on pool-b at its own unit price, delivered all
    # 128 GPU-hours, and its invoice is what it would have been without the incident
    hours_on = {
        slug: sum(
            UsageRecord.objects.filter(reservation=moved, pool__slug=slug).values_list(
                "gpus", flat=True
            )
        )
        for slug in ("pool-a", "pool-b")
    }
    assert hours_on == {"pool-a": 16 * 5, "pool-b": 16 * 3}
    assert set(
        UsageRecord.objects.filter(reservation=moved).values_list("unit_price", flat=True)
    ) == {moved.unit_price}
    # provider cost follows the pool the hours ran on
    assert set(
        UsageRecord.objects.filter(reservation=moved, pool=other).values_list(
            "cost_per_gpu_hour", flat=True
        )
    ) == {other.cost_per_gpu_hour}
    invoice = december_invoice(hit)
    assert invoice.total == moved.total_price == Decimal("384.00")  # 3.00 x 128
    assert (invoice.subtotal, invoice.total) == (
        december_invoice(control).subtotal * 3 / 4,  # the control pays 4.00 a GPU-hour
        december_invoice(control).total * 3 / 4,
    )
    assert not CreditNote.objects.filter(tenant=hit).exists()
    assert ledger_violations() == []


def test_with_no_room_the_lost_hours_are_not_billed_and_the_month_close_credits_them_once(
    twins, pool
):
    # given a 16-GPU booking 09-17 (128 GPU-hours) and no other pool
    hit, _ = twins
    reservation = book(hit, booking(gpus=16, start=at(9), hours=8), now=BOOKED)

    # when all of pool-a fails 09-10 (16 of 128 GPU-hours lost: 87.5 % delivered)
    outage(pool, 32, at(9), at(10), now=BOOKED)
    close_december()
    close_december(CLOSE + timedelta(days=1))  # the next day's run changes nothing

    # then only the 112 delivered GPU-hours are billed (3.00 each)
    invoice = december_invoice(hit)
    assert invoice.total == Decimal("336.00")
    reservation.refresh_from_db()
    assert reservation.charge == Decimal("336.00")
    # and below 95 % delivered, the policy credits 100 % of the month's charge, once
    (note,) = CreditNote.objects.filter(tenant=hit)
    assert (note.reason, note.amount, note.invoice_id) == ("sla", Decimal("336.00"), invoice.pk)
    incident = Incident.objects.get()
    assert f"#{incident.pk}" in note.memo
    (credit,) = SlaCredit.objects.all()
    assert (credit.promised_gpu_hours, credit.delivered_gpu_hours) == (128, 112)
    assert (credit.credit_percent, credit.incident_id) == (Decimal("100.00"), incident.pk)


def test_an_outage_found_after_metering_drops_the_hours_from_the_draft(twins, pool):
    # given a 16-GPU booking 09-17 metered and drafted on the evening of the day
    hit, _ = twins
    book(hit, booking(gpus=16, start=at(9), hours=8), now=BOOKED)
    evening = at(20)
    meter(evening)
    draft_invoices_task(now=evening.isoformat())
    assert december_invoice(hit).total == Decimal("384.00")

    # when at 21:00 an outage of 09-11 is recorded (found late) and the jobs run again
    outage(pool, 32, at(9), at(11), now=at(21))
    meter(at(22))
    draft_invoices_task(now=at(22).isoformat())

    # then the draft no longer bills the 32 lost GPU-hours
    invoice = december_invoice(hit)
    assert invoice.status == Invoice.Status.DRAFT
    assert invoice.total == Decimal("288.00")  # 3.00 x 96
    assert ledger_violations() == []


def test_an_outage_found_after_the_invoice_was_issued_gives_a_credit_note(twins, pool):
    # given December invoiced and finalized
    hit, _ = twins
    book(hit, booking(gpus=16, start=at(9), hours=8), now=BOOKED)
    close_december()
    invoice = december_invoice(hit)
    assert (invoice.status, invoice.total) == (Invoice.Status.FINALIZED, Decimal("384.00"))

    # when an outage of 09-11 on December 7 is recorded on January 3 and metering runs
    later = CLOSE + timedelta(hours=2)
    outage(pool, 32, at(9), at(11), now=later)
    meter(later)
    meter(later + timedelta(hours=1))

    # then the invoice stays as issued and one correction credit note gives back the 32
    # GPU-hours (96.00) it billed but were never delivered
    invoice.refresh_from_db()
    assert invoice.total == Decimal("384.00")
    (note,) = CreditNote.objects.filter(invoice=invoice, reason="correction")
    assert note.amount == Decimal("96.00")
    assert Reservation.objects.get().charge == Decimal("288.00")


def test_an_outage_of_idle_gpus_changes_no_bill(twins):
    # given a 512-GPU pool with 104 GPUs booked 09-17 (13 reservations of 8)
    hit, control = twins
    big = CapacityPoolFactory(slug="big", gpus_per_node=8, node_count=64)
    reservations = [
        book(hit if n % 2 else control, booking(gpus=8, start=at(9), hours=8), now=BOOKED)
        for n in range(13)
    ]

    # when 8 idle GPUs fail 10-12 and December is closed
    outage(big, 8, at(10), at(12), now=BOOKED)
    close_december()

    # then every invoice bills exactly the bookings' totals, nobody is credited
    for tenant in twins:
        booked_total = sum(r.total_price for r in reservations if r.tenant_id == tenant.pk)
        assert december_invoice(tenant).subtotal == booked_total
    assert not CreditNote.objects.exists()
    assert not SlaCredit.objects.exists()
    assert UsageRecord.objects.count() == 13 * 8
    assert ledger_violations() == []
