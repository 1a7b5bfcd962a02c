from decimal import Decimal

import pytest

from billing.models import CreditNote, Invoice, LedgerEntry, UsageCorrection, UsageRecord
from billing.services import corrections
from billing.services.corrections import usage_corrections_apply
from billing.services.credit_notes import credit_note_create
from billing.services.invoicing import invoices_draft, invoices_finalize_due
from billing.services.metering import meter_usage
from tests.billing.conftest import APRIL, MARCH, at, displace, incident_record, reserve

AFTER_GRACE = at(3, 1, month=4)


def bill(until) -> None:
    meter_usage(until=until)
    invoices_draft(now=until)


def usage(reservation) -> list[tuple]:
    return list(
        UsageRecord.objects.filter(reservation=reservation)
        .order_by("hour", "pool__slug")
        .values_list("hour", "pool__slug", "gpus", "amount")
    )


@pytest.mark.django_db
def test_an_outage_recorded_after_metering_drops_its_hours_from_the_draft_once(tenant, pool):
    # given a draft with 10 hours of 8 GPUs at 3.00
    reservation = reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
    bill(until=at(3))

    # when an outage from 12:00 to 15:00 that took all 8 GPUs is recorded, and the correction
    # runs twice
    outage = incident_record(pool=pool, start=at(2, 12), end=at(2, 15))
    displacement = displace(reservation, outage, lost=8)
    first = usage_corrections_apply(now=at(3, 1))
    again = usage_corrections_apply(now=at(3, 2))

    # then the hours are gone from the usage and from the draft, which was rebuilt at once
    assert (first.done, again.done) == (1, 0)
    assert [row[0] for row in usage(reservation)] == [
        at(2, h) for h in (10, 11, 15, 16, 17, 18, 19)
    ]
    invoice = Invoice.objects.get()
    assert (invoice.status, invoice.total, invoice.built_at) == (
        "draft",
        Decimal("168.00"),
        at(3, 1),
    )
    assert invoice.lines.get().hours == 7
    correction = UsageCorrection.objects.get()
    assert (correction.displacement, correction.usage_removed, correction.credit_note) == (
        displacement,
        3,
        None,
    )
    assert not CreditNote.objects.exists()


@pytest.mark.django_db
def test_a_move_recorded_after_metering_bills_both_pools_and_leaves_the_draft_total(
    tenant, pool, backup_pool
):
    # given a draft with 16 GPUs for 6 hours at 3.00 (288.00)
    reservation = reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=6, gpus=16)
    bill(until=at(3))
    assert Invoice.objects.get().total == Decimal("288.00")

    # when an outage moved 8 of them to the backup pool from 12:00 to 14:00, after metering
    outage = incident_record(pool=pool, start=at(2, 12), end=at(2, 14))
    displace(reservation, outage, moved=8, to=backup_pool)
    usage_corrections_apply(now=at(3, 1))

    # then those hours are metered on both pools, 8 GPUs each, and the draft bills the same
    assert usage(reservation) == [
        (at(2, 10), "aws-h100", 16, Decimal("48.0000")),
        (at(2, 11), "aws-h100", 16, Decimal("48.0000")),
        (at(2, 12), "aws-h100", 8, Decimal("24.0000")),
        (at(2, 12), "azure-h100-backup", 8, Decimal("24.0000")),
        (at(2, 13), "aws-h100", 8, Decimal("24.0000")),
        (at(2, 13), "azure-h100-backup", 8, Decimal("24.0000")),
        (at(2, 14), "aws-h100", 16, Decimal("48.0000")),
        (at(2, 15), "aws-h100", 16, Decimal("48.0000")),
    ]
    invoice = Invoice.objects.get()
    assert invoice.total == Decimal("288.00")
    assert list(invoice.lines.values_list("pool", "gpus", "hours", "gpu_hours")) == [
        ("aws-h100", 16, 6, Decimal("96.0000"))
    ]
    assert not UsageRecord.objects.filter(invoice__isnull=True).exists()
    assert UsageCorrection.objects.get().usage_removed == 2


@pytest.mark.django_db
def test_hours_of_a_displacement_not_metered_yet_are_left_to_metering(tenant, pool):
    # given a reservation metered up to 12:00, and an outage recorded for 14:00 to 16:00
    reservation = reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
    meter_usage(until=at(2, 12))
    displace(reservation, incident_record(pool=pool, start=at(2, 14), end=at(2, 16)), lost=8)

    # when the correction runs, and metering later goes on
    usage_corrections_apply(now=at(2, 12))
    assert len(usage(reservation)) == 2
    meter_usage(until=at(3))

    # then the outage hours are never billed, and nothing was metered ahead of the clock
    assert [row[0] for row in usage(reservation)] == [
        at(2, h) for h in (10, 11, 12, 13, 16, 17, 18, 19)
    ]
    assert UsageCorrection.objects.get().usage_removed == 0


@pytest.mark.django_db
def test_an_outage_recorded_after_finalization_is_credited_once(tenant, pool):
    # given March finalized: 10 hours of 8 GPUs at 3.00 = 240.00
    reservation = reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
    bill(until=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)
    invoice = Invoice.objects.get()

    # when an outage that took all its GPUs from 12:00 to 15:00 is recorded on 5 April, and
    # the correction runs twice
    outage = incident_record(pool=pool, start=at(2, 12), end=at(2, 15))
    displace(reservation, outage, lost=8)
    usage_corrections_apply(now=at(5, month=4))
    usage_corrections_apply(now=at(5, 1, month=4))

    # then one correction credit note gives back the 3 hours (72.00); the invoice and its
    # usage are unchanged
    note = CreditNote.objects.get()
    assert (note.invoice, note.reason, note.amount, note.number) == (
        invoice,
        "correction",
        Decimal("72.00"),
        "CN-2026-000001",
    )
    assert note.memo == (
        f"Incident #{outage.pk} took GPUs off 3 billed hour(s), 2026-03-02 12:00 to "
        "2026-03-02 15:00 UTC"
    )
    assert len(usage(reservation)) == 10
    invoice.refresh_from_db()
    assert (invoice.status, invoice.total) == ("finalized", Decimal("240.00"))
    correction = UsageCorrection.objects.get()
    assert (correction.usage_removed, correction.credit_note) == (0, note)
    assert list(
        LedgerEntry.objects.filter(kind="credit_note").values_list("amount", flat=True)
    ) == [Decimal("72.00")]
    assert not Invoice.objects.filter(period_start=APRIL).exists()


@pytest.mark.django_db
def test_gpus_moved_after_finalization_are_credited_and_billed_on_the_next_draft(
    tenant, pool, backup_pool
):
    # given March finalized: 16 GPUs for 6 hours at 3.00 = 288.00
    reservation = reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=6, gpus=16)
    bill(until=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)

    # when an outage that moved 8 of them to the backup pool for 2 hours is recorded later
    outage = incident_record(pool=pool, start=at(2, 12), end=at(2, 14))
    displace(reservation, outage, moved=8, to=backup_pool)
    usage_corrections_apply(now=at(5, month=4))

    # then March credits the 8 GPUs that left the pool for 2 hours (48.00), and the hours they
    # ran on the backup pool are billed on April's draft at the reservation's price: the
    # tenant pays 288.00 in all, as if nothing had moved
    note = CreditNote.objects.get()
    assert (note.reason, note.amount) == ("correction", Decimal("48.00"))
    april = Invoice.objects.get(period_start=APRIL)
    assert (april.status, april.total) == ("draft", Decimal("48.00"))
    assert list(april.lines.values_list("pool", "hours", "gpu_hours")) == [
        ("aws-h100", 2, Decimal("16.0000"))
    ]
    march = Invoice.objects.get(period_start=MARCH)
    assert march.total - note.amount + april.total == Decimal("288.00")


@pytest.mark.django_db
def test_a_correction_credit_never_exceeds_what_the_invoice_can_still_credit(tenant, pool):
    # given March finalized at 240.00, of which 200.00 was already credited
    reservation = reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
    bill(until=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)
    invoice = Invoice.objects.get()
    credit_note_create(invoice_id=invoice.pk, amount=Decimal("200.00"), reason="goodwill")

    # when an outage is recorded that took 3 hours (72.00)
    displace(reservation, incident_record(pool=pool, start=at(2, 12), end=at(2, 15)), lost=8)
    usage_corrections_apply(now=at(5, month=4))

    # then only the 40.00 left is credited
    assert list(CreditNote.objects.order_by("number").values_list("reason", "amount")) == [
        ("goodwill", Decimal("200.00")),
        ("correction", Decimal("40.00")),
    ]


class WorkerKilled(Exception):
    pass


@pytest.mark.django_db
def test_a_correction_run_that_dies_half_way_is_redone_whole(tenant, pool, monkeypatch):
    # given a draft and a finalized invoice, both hit by outages recorded after metering
    march = reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
    bill(until=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)
    april = reserve(tenant=tenant, pool=pool, start=at(3, 10, month=4), hours=10)
    bill(until=at(4, month=4))
    displace(march, incident_record(pool=pool, start=at(2, 12), end=at(2, 15)), lost=8)
    displace(
        april, incident_record(pool=pool, start=at(3, 12, month=4), end=at(3, 15, month=4)), lost=8
    )
    before = (UsageRecord.objects.count(), Invoice.objects.get(period_start=APRIL).total)

    # when the run dies while issuing the credit note, after it dropped the draft's hours
    def die(**kwargs):
        raise WorkerKilled()

    monkeypatch.setattr(corrections, "credit_note_create", die)
    with pytest.raises(WorkerKilled):
        usage_corrections_apply(now=at(5, month=4))

    # then nothing of it remains
    assert (UsageRecord.objects.count(), Invoice.objects.get(period_start=APRIL).total) == before
    assert not UsageCorrection.objects.exists()

    # and the next run does all of it
    monkeypatch.undo()
    assert usage_corrections_apply(now=at(5, 1, month=4)).done == 2
    assert Invoice.objects.get(period_start=APRIL).total == Decimal("168.00")
    assert CreditNote.objects.get().amount == Decimal("72.00")


@pytest.mark.django_db
def test_the_correction_run_costs_one_query_when_there_is_nothing_to_do(
    tenant, pool, django_assert_num_queries
):
    reservation = reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
    displace(reservation, incident_record(pool=pool, start=at(2, 12), end=at(2, 15)), lost=8)
    bill(until=at(3))
    usage_corrections_apply(now=at(3))

    with django_assert_num_queries(1):
        assert usage_corrections_apply(now=at(3, 1)).done == 0
