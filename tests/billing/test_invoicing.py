from decimal import Decimal

import pytest
import time_machine

from billing import credit
from billing.errors import PeriodNotEnded
from billing.models import DocumentSequence, Invoice, InvoiceLine, LedgerEntry, UsageRecord
from billing.services import accounts, invoicing
from billing.services.corrections import usage_corrections_apply
from billing.services.invoicing import (
    invoice_draft_build,
    invoice_finalize,
    invoice_void,
    invoices_draft,
    invoices_finalize_due,
    invoices_finalize_month,
)
from billing.services.metering import meter_usage
from marketplace.models import Reservation
from tests.billing.conftest import APRIL, MARCH, MAY, at, displace, incident_record, reserve
from tests.db_helpers import run_concurrently
from tests.factories import CapacityPoolFactory, TenantFactory

AFTER_GRACE = at(3, 1, month=4)  # 3 April 01:00: March's 2-day grace period is over


def invoice_snapshot(invoice: Invoice) -> tuple:
    invoice.refresh_from_db()
    lines = list(
        invoice.lines.order_by("first_hour").values_list(
            "reservation_id", "hours", "gpu_hours", "unit_price", "amount"
        )
    )
    return (
        invoice.pk,
        invoice.number,
        invoice.status,
        invoice.subtotal,
        invoice.discount_total,
        invoice.tax_amount,
        invoice.total,
        lines,
    )


def bill(until, now=None) -> None:
    with time_machine.travel(until, tick=False):  # metering never reaches past now
        meter_usage(until=until)
    invoices_draft(now=now or until)


@pytest.mark.django_db
def test_a_month_of_usage_becomes_one_draft_with_one_line_per_reservation(tenant, pool):
    # given two reservations in March
    first = reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=5, gpus=8)
    second = reserve(tenant=tenant, pool=pool, start=at(9), hours=2, gpus=16, unit_price="2.5000")

    bill(until=at(20))

    invoice = Invoice.objects.get()
    assert (invoice.status, invoice.period_start, invoice.period_end) == ("draft", MARCH, APRIL)
    assert invoice.number is None
    lines = list(invoice.lines.values_list("reservation_id", "hours", "gpu_hours", "amount"))
    assert lines == [
        (first.pk, 5, Decimal("40.0000"), Decimal("120.00")),
        (second.pk, 2, Decimal("32.0000"), Decimal("80.00")),
    ]
    assert (invoice.subtotal, invoice.tax_amount, invoice.total) == (
        Decimal("200.00"),
        Decimal("0.00"),
        Decimal("200.00"),
    )


@pytest.mark.django_db
def test_invoicing_a_month_twice_gives_one_invoice_with_the_same_number_and_totals(tenant, pool):
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=30)
    bill(until=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)
    first = invoice_snapshot(Invoice.objects.get())

    bill(until=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)
    invoices_finalize_month(period_start=MARCH, now=AFTER_GRACE)

    assert Invoice.objects.count() == 1
    assert invoice_snapshot(Invoice.objects.get()) == first
    assert first[1:3] == ("INV-2026-000001", "finalized")
    assert first[6] == Decimal("720.00")
    assert LedgerEntry.objects.filter(kind="invoice").count() == 1


@pytest.mark.django_db
def test_rebuilding_a_draft_is_idempotent(tenant, pool):
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=30)
    bill(until=at(10))
    before = invoice_snapshot(Invoice.objects.get())

    invoice_draft_build(tenant_id=tenant.pk, currency="USD", now=at(10))
    invoices_draft(now=at(10))

    assert invoice_snapshot(Invoice.objects.get()) == before
    assert InvoiceLine.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_invoicing_runs_for_one_tenant_make_one_invoice(tenant, pool):
    # given a tenant's March usage, metered but not invoiced
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=30)
    reserve(tenant=tenant, pool=pool, start=at(20, 10), hours=3)
    meter_usage(until=AFTER_GRACE)

    # when two workers draft and finalize the tenant at the same moment
    def draft_and_finalize() -> None:
        invoice_draft_build(tenant_id=tenant.pk, currency="USD", now=AFTER_GRACE)
        invoices_finalize_due(now=AFTER_GRACE)

    run_concurrently(draft_and_finalize, draft_and_finalize)  # fails on any error or a hang

    # then one invoice, one number, one ledger charge
    invoice = Invoice.objects.get()
    assert (invoice.number, invoice.status, invoice.total) == (
        "INV-2026-000001",
        "finalized",
        Decimal("792.00"),
    )
    assert DocumentSequence.objects.get(series="INV", year=2026).last_number == 1
    assert list(LedgerEntry.objects.values_list("kind", "amount")) == [
        ("invoice", Decimal("-792.00"))
    ]


class WorkerKilled(Exception):
    pass


@pytest.mark.django_db
def test_a_run_that_dies_half_way_leaves_nothing_and_the_rerun_completes_it(
    tenant, other_tenant, pool, monkeypatch
):
    # given two tenants with March usage, and a worker that dies after numbering the first
    # invoice, while posting it to the ledger
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
    reserve(tenant=other_tenant, pool=pool, start=at(5, 10), hours=10, gpus=16)
    meter_usage(until=AFTER_GRACE)

    def die(**kwargs):
        raise WorkerKilled()

    monkeypatch.setattr(invoicing.accounts, "ledger_post_many", die)

    # when the drafts are built and the first one's finalization dies
    invoices_draft(now=AFTER_GRACE)
    with pytest.raises(WorkerKilled):
        invoice_finalize(invoice_id=Invoice.objects.get(tenant=tenant).pk, now=AFTER_GRACE)

    # then nothing of the finalization remains: still a draft, no number used
    invoice = Invoice.objects.get(tenant=tenant)
    assert (invoice.status, invoice.number) == ("draft", None)
    assert not DocumentSequence.objects.filter(last_number__gt=0).exists()
    assert not LedgerEntry.objects.exists()

    # when the worker comes back
    monkeypatch.undo()
    invoices_finalize_due(now=AFTER_GRACE)

    # then the same draft is finalized, numbers have no gap, and there is no orphan draft
    numbers = dict(Invoice.objects.values_list("tenant_id", "number"))
    assert numbers == {tenant.pk: "INV-2026-000001", other_tenant.pk: "INV-2026-000002"}
    assert Invoice.objects.get(tenant=tenant).pk == invoice.pk
    assert not Invoice.objects.filter(status="draft").exists()


@pytest.mark.django_db
def test_a_draft_build_that_dies_leaves_no_orphan_draft(tenant, pool, monkeypatch):
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
    meter_usage(until=at(10))

    def die(*args):
        raise WorkerKilled()

    monkeypatch.setattr(invoicing, "_rebuild", die)
    with pytest.raises(WorkerKilled):
        invoice_draft_build(tenant_id=tenant.pk, currency="USD", now=at(10))

    assert not Invoice.objects.exists()
    assert UsageRecord.objects.filter(invoice__isnull=False).count() == 0


@pytest.mark.django_db
def test_late_usage_inside_the_grace_period_lands_on_the_months_draft(tenant, pool):
    # given a reservation on 31 March 10:00-20:00, and a scheduler that went down at 12:00:
    # on 1 April the March draft has only 2 of its 10 hours
    reserve(tenant=tenant, pool=pool, start=at(31, 10), hours=10)
    meter_usage(until=at(31, 12))
    invoices_draft(now=at(1, 1, month=4))
    assert Invoice.objects.get().total == Decimal("48.00")

    # when metering back-fills on 2 April, inside the grace period, and the draft run follows
    bill(until=at(2, 12, month=4))

    # then the late hours are on March's draft, which is still a draft
    invoice = Invoice.objects.get()
    assert (invoice.period_start, invoice.status, invoice.total) == (
        MARCH,
        "draft",
        Decimal("240.00"),
    )
    assert invoice.lines.get().hours == 10


@pytest.mark.django_db
def test_late_usage_after_finalization_goes_to_the_next_invoice_and_march_is_unchanged(
    tenant, pool
):
    # given March finalized on 3 April
    reserve(tenant=tenant, pool=pool, start=at(30, 10), hours=10)
    bill(until=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)
    march = Invoice.objects.get(period_start=MARCH)
    before = invoice_snapshot(march)

    # when March usage turns up afterwards (a reservation the metering missed until now)
    late = reserve(tenant=tenant, pool=pool, start=at(31, 20), hours=2, unit_price="5.0000")
    UsageRecord.objects.bulk_create(
        [
            UsageRecord(
                reservation=late,
                tenant=tenant,
                pool=pool,
                hour=at(31, 20 + i),
                gpus=8,
                gpu_hours=8,
                unit_price=Decimal(5),
                amount=Decimal(40),
                cost_per_gpu_hour=Decimal(2),
                provider_cost=Decimal(16),
                currency="USD",
            )
            for i in range(2)
        ]
    )
    bill(until=at(4, month=4))

    # then it is billed on April's draft and March has not changed
    assert invoice_snapshot(march) == before
    april = Invoice.objects.get(period_start=APRIL)
    assert april.status == "draft"
    assert list(april.lines.values_list("reservation_id", "hours", "amount")) == [
        (late.pk, 2, Decimal("80.00"))
    ]
    assert UsageRecord.objects.filter(reservation=late, invoice=april).count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("unit_price", "line_amount"),
    [("0.0175", Decimal("0.18")), ("0.0174", Decimal("0.17")), ("0.0125", Decimal("0.13"))],
)
def test_each_line_is_rounded_half_up_to_the_cent(tenant, pool, unit_price, line_amount):
    # given 10 GPU-hours at a sub-cent rate: 0.175, 0.174, 0.125 before rounding
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10, gpus=1, unit_price=unit_price)

    bill(until=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)

    invoice = Invoice.objects.get()
    assert invoice.lines.get().amount == line_amount
    assert invoice.total == line_amount


@pytest.mark.django_db
def test_lines_are_rounded_before_they_are_summed(tenant, pool):
    # 0.175 + 0.175 = 0.35 unrounded, but the invoice shows two lines of 0.18
    for day in (2, 3):
        reserve(tenant=tenant, pool=pool, start=at(day), hours=10, gpus=1, unit_price="0.0175")

    bill(until=at(10))

    invoice = Invoice.objects.get()
    assert list(invoice.lines.values_list("amount", flat=True)) == [Decimal("0.18")] * 2
    assert invoice.total == Decimal("0.36")


@pytest.mark.django_db
def test_a_reservation_crossing_a_month_boundary_is_split_between_two_invoices(tenant, pool):
    # given 8 GPUs at 3.0000 from 31 March 12:00 to 1 April 12:00
    reservation = reserve(tenant=tenant, pool=pool, start=at(31, 12), hours=24)

    bill(until=at(2, month=5))
    invoices_finalize_due(now=at(3, 1, month=5))

    march, april = Invoice.objects.order_by("period_start")
    assert (march.period_start, march.number, march.total) == (
        MARCH,
        "INV-2026-000001",
        Decimal("288.00"),
    )
    assert (april.period_start, april.number, april.total) == (
        APRIL,
        "INV-2026-000002",
        Decimal("288.00"),
    )
    assert march.lines.get().last_hour == at(31, 23)
    assert april.lines.get().first_hour == APRIL
    reservation.refresh_from_db()
    assert reservation.invoiced_amount == reservation.charge == Decimal("576.00")


@pytest.mark.django_db
def test_finalizing_charges_the_ledger_and_marks_reservations_invoiced(tenant, pool):
    # given a reservation running from March into May, and a tenant paying 20 % tax
    tenant.tax_rate_percent = Decimal("20.00")
    tenant.save()
    reservation = reserve(tenant=tenant, pool=pool, start=at(31, 20), hours=48)
    credit_before = credit.credit_available(tenant=tenant)

    bill(until=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)

    # then March: 4 hours x 8 GPUs x 3.00 = 96.00 + 19.20 tax
    march = Invoice.objects.get(period_start=MARCH)
    assert (march.subtotal, march.tax_amount, march.total) == (
        Decimal("96.00"),
        Decimal("19.20"),
        Decimal("115.20"),
    )
    assert list(LedgerEntry.objects.values_list("kind", "amount", "reference")) == [
        ("invoice", Decimal("-115.20"), "INV-2026-000001")
    ]
    reservation.refresh_from_db()
    assert reservation.invoiced_amount == Decimal("96.00")
    # the credit check counted the tax before the invoice was issued: issuing changes nothing
    assert credit.credit_available(tenant=tenant) == credit_before


@pytest.mark.django_db
def test_discounts_show_against_list_price(tenant, pool):
    # given a unit price of 2.7000 against a list price of 3.0000 (commitment discount)
    reserve(tenant=tenant, pool=pool, start=at(2), hours=10, unit_price="2.7000", list_price="3")

    bill(until=at(10))

    invoice = Invoice.objects.get()
    line = invoice.lines.get()
    assert (line.gross_amount, line.discount_amount, line.amount) == (
        Decimal("240.00"),
        Decimal("24.00"),
        Decimal("216.00"),
    )
    assert (invoice.subtotal, invoice.discount_total, invoice.total) == (
        Decimal("240.00"),
        Decimal("24.00"),
        Decimal("216.00"),
    )


@pytest.mark.django_db
def test_cancellation_fees_are_billed_as_their_own_line(tenant, pool):
    reservation = reserve(
        tenant=tenant,
        pool=pool,
        start=at(10),
        hours=10,
        status=Reservation.Status.CANCELLED,
        capacity_until=at(10),
        cancellation_fee=Decimal("120.00"),
        cancelled_at=at(9, 15),
        charge=Decimal("120.00"),
    )

    bill(until=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)

    invoice = Invoice.objects.get()
    assert list(invoice.lines.values_list("kind", "reservation_id", "amount")) == [
        ("cancellation_fee", reservation.pk, Decimal("120.00"))
    ]
    reservation.refresh_from_db()
    assert reservation.invoiced_amount == Decimal("120.00")


@pytest.mark.django_db
def test_prepaid_credit_pays_the_invoice_when_it_covers_it(tenant, other_tenant, pool):
    accounts.top_up_create(tenant=tenant, amount=Decimal("1000.00"), reference="wire-1")
    accounts.top_up_create(tenant=other_tenant, amount=Decimal("100.00"), reference="wire-2")
    reserve(tenant=tenant, pool=pool, start=at(2), hours=10)
    reserve(tenant=other_tenant, pool=pool, start=at(2), hours=10)

    bill(until=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)

    covered = Invoice.objects.get(tenant=tenant)
    assert (covered.status, covered.prepaid_applied, covered.paid_at) == (
        "paid",
        Decimal("240.00"),
        AFTER_GRACE,
    )
    partly = Invoice.objects.get(tenant=other_tenant)
    assert (partly.status, partly.prepaid_applied) == ("finalized", Decimal("100.00"))
    assert credit.ledger_balance(tenant=tenant) == Decimal("760.00")


@pytest.mark.django_db
def test_a_month_cannot_be_finalized_before_it_ends(tenant, pool):
    reserve(tenant=tenant, pool=pool, start=at(2), hours=10)
    bill(until=at(10))

    with pytest.raises(PeriodNotEnded):
        invoice_finalize(invoice_id=Invoice.objects.get().pk, now=at(31, 23))
    with pytest.raises(PeriodNotEnded):
        invoices_finalize_month(period_start=MARCH, now=at(31, 23))
    # inside the grace period the scheduled run leaves it alone
    assert invoices_finalize_due(now=at(2, 23, month=4)).done == 0
    assert Invoice.objects.get().status == "draft"


@pytest.mark.django_db
def test_invoice_numbers_are_gapless_and_restart_each_year(pool):
    tenants = [TenantFactory() for _ in range(3)]
    for tenant in tenants:
        reserve(tenant=tenant, pool=pool, start=at(2, month=12, year=2026), hours=5)
        reserve(tenant=tenant, pool=pool, start=at(2, month=1, year=2027), hours=5)

    bill(until=at(10, month=1, year=2027))
    invoices_finalize_month(
        period_start=at(1, month=12, year=2026), now=at(3, 1, month=1, year=2027)
    )
    invoices_finalize_due(now=at(3, 1, month=2, year=2027))

    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [
        "INV-2027-000001",
        "INV-2027-000002",
        "INV-2027-000003",
        "INV-2027-000004",
        "INV-2027-000005",
        "INV-2027-000006",
    ]


@pytest.mark.django_db
def test_reservations_in_another_currency_get_their_own_invoice(tenant, pool):
    eur_pool = CapacityPoolFactory(slug="eu-h100", currency="EUR")
    reserve(tenant=tenant, pool=pool, start=at(2), hours=10)
    reserve(tenant=tenant, pool=eur_pool, start=at(2), hours=10)

    bill(until=at(10))

    assert sorted(Invoice.objects.values_list("currency", "total")) == [
        ("EUR", Decimal("240.00")),
        ("USD", Decimal("240.00")),
    ]


@pytest.mark.django_db
def test_an_outage_recorded_after_metering_is_dropped_from_the_draft(tenant, pool):
    # given a draft with 10 hours of 8 GPUs
    reservation = reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
    bill(until=at(3))
    assert Invoice.objects.get().total == Decimal("240.00")

    # when an outage from 12:00 to 15:00 that took all 8 GPUs is recorded afterwards, and the
    # next metering run applies it
    outage = incident_record(pool=pool, start=at(2, 12), end=at(2, 15))
    displace(reservation, outage, lost=8)
    usage_corrections_apply(now=at(3, 1))

    # then the draft has dropped those 3 hours, and is issued so
    assert Invoice.objects.get().total == Decimal("168.00")
    invoices_finalize_due(now=AFTER_GRACE)
    invoice = Invoice.objects.get()
    assert (invoice.status, invoice.total) == ("finalized", Decimal("168.00"))
    assert invoice.lines.get().hours == 7


@pytest.mark.django_db
def test_a_reservation_with_outage_hours_is_fully_settled_in_the_credit_check(tenant, pool):
    # given a reservation that lost 2 of its 10 hours to an outage
    reservation = reserve(
        tenant=tenant, pool=pool, start=at(2, 10), hours=10, status=Reservation.Status.COMPLETED
    )
    displace(reservation, incident_record(pool=pool, start=at(2, 12), end=at(2, 14)), lost=8)

    bill(until=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)

    # then 192.00 is billed and nothing stays "uninvoiced" for the outage hours
    assert Invoice.objects.get().total == Decimal("192.00")
    reservation.refresh_from_db()
    assert reservation.invoiced_amount == reservation.charge == Decimal("240.00")
    assert credit.uninvoiced_commitments(tenant=tenant) == Decimal("0")


def issued_invoice(tenant) -> tuple:
    invoice = Invoice.objects.get(tenant=tenant)
    lines = list(
        invoice.lines.values_list(
            "kind",
            "description",
            "pool",
            "gpus",
            "hours",
            "gpu_hours",
            "list_unit_price",
            "unit_price",
            "gross_amount",
            "discount_amount",
            "amount",
            "first_hour",
            "last_hour",
        )
    )
    return (invoice.status, invoice.subtotal, invoice.discount_total, invoice.total, lines)


@pytest.mark.django_db
def test_a_reservation_moved_to_another_pool_is_billed_as_if_it_had_never_moved(
    tenant, other_tenant, pool, backup_pool
):
    # given two identical reservations of 16 GPUs at 2.7000 (list price 3.00): the second
    # tenant's had 8 GPUs moved to the cheaper backup pool for 5 hours and all 16 for 2 more
    reserve(
        tenant=tenant,
        pool=pool,
        start=at(2, 10),
        hours=20,
        gpus=16,
        unit_price="2.7",
        list_price="3",
    )
    moved = reserve(
        tenant=other_tenant,
        pool=pool,
        start=at(2, 10),
        hours=20,
        gpus=16,
        unit_price="2.7",
        list_price="3",
    )
    displace(
        moved, incident_record(pool=pool, start=at(2, 12), end=at(2, 17)), moved=8, to=backup_pool
    )
    displace(
        moved,
        incident_record(pool=pool, start=at(2, 20), end=at(2, 22), gpus=16),
        moved=16,
        to=backup_pool,
    )

    bill(until=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)

    # then both invoices are the same, to the line: one line, on the reservation's own pool,
    # at its own price
    assert UsageRecord.objects.filter(reservation=moved, pool=backup_pool).count() == 7
    assert issued_invoice(other_tenant) == issued_invoice(tenant)
    assert issued_invoice(tenant)[1:4] == (Decimal("960.00"), Decimal("96.00"), Decimal("864.00"))
    assert issued_invoice(tenant)[4][0][1:5] == (
        "16 x H100-SXM-80GB on aws-h100, 2026-03-02 10:00 to 2026-03-03 06:00 UTC",
        "aws-h100",
        16,
        20,
    )


@pytest.mark.django_db
def test_voiding_reverses_the_ledger_charge(tenant, pool):
    reserve(tenant=tenant, pool=pool, start=at(2), hours=10)
    bill(until=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)
    invoice = Invoice.objects.get()

    invoice_void(invoice_id=invoice.pk, reason="Issued in error", now=AFTER_GRACE)
    invoice_void(invoice_id=invoice.pk, reason="Issued in error", now=AFTER_GRACE)

    invoice.refresh_from_db()
    assert (invoice.status, invoice.void_reason) == ("void", "Issued in error")
    assert credit.ledger_balance(tenant=tenant) == Decimal("0.00")
    assert sorted(LedgerEntry.objects.values_list("kind", "amount")) == [
        ("adjustment", Decimal("240.00")),
        ("invoice", Decimal("-240.00")),
    ]


@pytest.mark.django_db
def test_the_daily_run_finalizes_only_months_past_their_grace_period(tenant, pool):
    reserve(tenant=tenant, pool=pool, start=at(30, month=4), hours=48)
    bill(until=at(3, 1, month=5))
    assert invoices_finalize_due(now=at(2, 23, month=5)).done == 0

    result = invoices_finalize_due(now=at(3, 1, month=5))

    assert result.done == 1
    assert dict(Invoice.objects.values_list("period_start", "status")) == {
        APRIL: "finalized",
        MAY: "draft",
    }


@pytest.mark.django_db
def test_one_bad_account_does_not_hold_up_the_others(tenant, other_tenant, pool):
    # given two tenants due for finalization, one of whose ledgers already holds an entry under
    # the number its invoice is about to get, with another amount (a corrupted account)
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
    reserve(tenant=other_tenant, pool=pool, start=at(2, 10), hours=1)
    bill(until=AFTER_GRACE)
    LedgerEntry.objects.create(
        tenant=tenant,
        kind="invoice",
        amount=Decimal("-1.00"),
        currency="USD",
        reference="INV-2026-000001",
    )

    # when the finalize run takes both in one batch
    result = invoices_finalize_due(now=AFTER_GRACE)

    # then the batch is redone one by one: the healthy tenant is invoiced, the other reported
    bad = Invoice.objects.get(tenant=tenant)
    assert result.done == 1
    assert result.failed == [f"invoice {bad.pk}"]
    assert bad.status == "draft"
    good = Invoice.objects.get(tenant=other_tenant)
    assert (good.status, good.number) == ("finalized", "INV-2026-000001")
