from decimal import Decimal

import pytest

from billing.models import CreditNote, Invoice, LedgerEntry, SlaCredit, SlaCreditRule
from billing.services import sla
from billing.services.corrections import usage_corrections_apply
from billing.services.credit_notes import credit_note_create
from billing.services.invoicing import invoices_draft, invoices_finalize_due
from billing.services.metering import meter_usage
from billing.services.sla import sla_credits_issue
from billing.tasks import finalize_invoices_task
from tests.billing.conftest import MARCH, at, displace, incident_record, reserve

AFTER_GRACE = at(3, 1, month=4)


def close_march() -> None:
    """Meter, draft and finalize March, then issue its SLA credits (the finalize run)."""
    meter_usage(until=AFTER_GRACE)
    invoices_draft(now=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)
    sla_credits_issue(now=AFTER_GRACE)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("hours", "gpus_lost", "lost_hours", "percent", "line", "credit"),
    [
        # 8 GPUs x 100 h promised; 4 h lost: 768 / 800 = 96 % -> below 99: 25 % of 2304.00
        (100, 8, 4, Decimal("25.00"), Decimal("2304.00"), Decimal("576.00")),
        # 10 h lost: 90 % -> below 95: 100 %
        (100, 8, 10, Decimal("100.00"), Decimal("2160.00"), Decimal("2160.00")),
        # 1 of 8 GPUs for 2 h of 100: 798 / 800 = 99.75 % -> below 99.9: 10 %
        (100, 1, 2, Decimal("10.00"), Decimal("2394.00"), Decimal("239.40")),
        # 1 GPU for 1 h of 250 h: 1999 / 2000 = 99.95 %: no credit
        (250, 1, 1, Decimal("0.00"), Decimal("5997.00"), Decimal("0.00")),
        # exactly 99 % (792 / 800) is not below 99: 10 %
        (100, 8, 1, Decimal("10.00"), Decimal("2376.00"), Decimal("237.60")),
    ],
    ids=["96 %", "90 %", "99.75 %", "99.95 %", "99 %"],
)
def test_the_sla_credit_follows_the_availability_tiers(
    tenant, pool, hours, gpus_lost, lost_hours, percent, line, credit
):
    # given 8 GPUs at 3.00 in March, and an outage that took some of them for some hours
    reservation = reserve(tenant=tenant, pool=pool, start=at(2), hours=hours)
    outage = incident_record(pool=pool, start=at(3), end=at(3, lost_hours), gpus=gpus_lost)
    displace(reservation, outage, lost=gpus_lost)

    # when March closes
    close_march()

    # then the reservation's line is credited by the tier its delivered share falls under
    invoice = Invoice.objects.get()
    assert invoice.lines.get().amount == line
    credit_row = SlaCredit.objects.get()
    promised = 8 * hours
    assert (
        credit_row.reservation_id,
        credit_row.period_start,
        credit_row.incident,
        credit_row.promised_gpu_hours,
        credit_row.delivered_gpu_hours,
        credit_row.credit_percent,
        credit_row.amount,
    ) == (
        reservation.pk,
        MARCH,
        outage,
        promised,
        promised - gpus_lost * lost_hours,
        percent,
        credit,
    )
    notes = list(CreditNote.objects.values_list("invoice_id", "reason", "amount"))
    assert notes == ([(invoice.pk, "sla", credit)] if credit else [])
    assert credit_row.credit_note == CreditNote.objects.first()


@pytest.mark.django_db
def test_a_reservation_fully_re_placed_gets_no_credit(tenant, pool, backup_pool):
    # given an outage that moved all 8 GPUs to the backup pool for 10 of 100 hours
    reservation = reserve(tenant=tenant, pool=pool, start=at(2), hours=100)
    outage = incident_record(pool=pool, start=at(3), end=at(3, 10))
    displace(reservation, outage, moved=8, to=backup_pool)

    close_march()

    # then everything promised was delivered: no credit, nothing assessed
    assert Invoice.objects.get().total == Decimal("2400.00")
    assert not SlaCredit.objects.exists()
    assert not CreditNote.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("lost_hours", "percent", "credit"),
    [(0, Decimal("50.00"), Decimal("1200.00")), (10, Decimal("100.00"), Decimal("2160.00"))],
    ids=["fully re-placed: 50 %", "90 % delivered: 100 % beats 50 %"],
)
def test_a_recall_inside_the_notice_credits_at_least_half(
    tenant, pool, backup_pool, lost_hours, percent, credit
):
    # given 8 GPUs for 100 hours on the backup pool, recalled with less than its notice for
    # 10 hours: moved to the primary pool, or lost
    reservation = reserve(tenant=tenant, pool=backup_pool, start=at(2), hours=100)
    recall = incident_record(
        pool=backup_pool, kind="recall", start=at(3), end=at(3, 10), short_notice=True
    )
    if lost_hours:
        displace(reservation, recall, lost=8)
    else:
        displace(reservation, recall, moved=8, to=pool)

    close_march()

    credit_row = SlaCredit.objects.get()
    assert (credit_row.incident, credit_row.credit_percent, credit_row.amount) == (
        recall,
        percent,
        credit,
    )
    assert CreditNote.objects.get().amount == credit


@pytest.mark.django_db
def test_a_recall_with_notice_that_re_placed_everything_gets_no_credit(tenant, pool, backup_pool):
    reservation = reserve(tenant=tenant, pool=backup_pool, start=at(2), hours=100)
    recall = incident_record(pool=backup_pool, kind="recall", start=at(3), end=at(3, 10))
    displace(reservation, recall, moved=8, to=pool)

    close_march()

    assert not SlaCredit.objects.exists()
    assert not CreditNote.objects.exists()


@pytest.mark.django_db
def test_the_months_close_issues_one_sla_note_per_invoice_once_even_if_run_twice(
    tenant, other_tenant, pool
):
    # given two reservations of one tenant hit by two outages, and one of another tenant
    first = reserve(tenant=tenant, pool=pool, start=at(2), hours=100)
    second = reserve(tenant=tenant, pool=pool, start=at(10), hours=100)
    third = reserve(tenant=other_tenant, pool=pool, start=at(2), hours=100)
    big = incident_record(pool=pool, start=at(3), end=at(3, 10), gpus=16)
    small = incident_record(pool=pool, start=at(11), end=at(11, 2))
    displace(first, big, lost=8)  # 90 %: 100 % of 2160.00
    displace(third, big, lost=8)  # 90 %: 100 % of 2160.00
    displace(second, small, lost=8)  # 98 %: 25 % of 2352.00 = 588.00
    meter_usage(until=AFTER_GRACE)
    invoices_draft(now=AFTER_GRACE)

    # when the finalize run runs twice (a re-delivered message)
    runs = [finalize_invoices_task(AFTER_GRACE.isoformat()) for _ in range(2)]

    # then each invoice got one SLA credit note, naming the incidents, and only once
    assert [run["sla_credit_notes"] for run in runs] == [2, 0]
    mine = Invoice.objects.get(tenant=tenant)
    notes = {
        note.invoice_id: (note.number, note.reason, note.amount, note.memo)
        for note in CreditNote.objects.all()
    }
    assert notes[mine.pk] == (
        "CN-2026-000001",
        "sla",
        Decimal("2748.00"),
        f"SLA credit for March 2026: incident(s) #{big.pk}, #{small.pk}",
    )
    theirs = Invoice.objects.get(tenant=other_tenant)
    assert notes[theirs.pk][1:] == (
        "sla",
        Decimal("2160.00"),
        f"SLA credit for March 2026: incident(s) #{big.pk}",
    )
    assert dict(SlaCredit.objects.values_list("reservation_id", "amount")) == {
        first.pk: Decimal("2160.00"),
        second.pk: Decimal("588.00"),
        third.pk: Decimal("2160.00"),
    }
    assert LedgerEntry.objects.filter(kind="credit_note").count() == 2
    assert sla_credits_issue(period_start=MARCH, now=at(10, month=4)).done == 0


@pytest.mark.django_db
def test_the_incident_that_cost_the_most_is_the_one_on_record(tenant, pool, backup_pool):
    reservation = reserve(tenant=tenant, pool=pool, start=at(2), hours=100)
    short = incident_record(pool=pool, start=at(3), end=at(3, 1))
    long = incident_record(pool=pool, start=at(4), end=at(4, 6))
    displace(reservation, short, lost=8)
    displace(reservation, long, lost=8)

    close_march()

    # 7 h lost of 100: 93 % -> 100 %
    credit_row = SlaCredit.objects.get()
    assert (credit_row.incident, credit_row.delivered_gpu_hours) == (long, 744)
    assert CreditNote.objects.get().memo == (
        f"SLA credit for March 2026: incident(s) #{short.pk}, #{long.pk}"
    )


@pytest.mark.django_db
def test_nothing_is_credited_while_the_months_invoice_is_a_draft(tenant, pool):
    reservation = reserve(tenant=tenant, pool=pool, start=at(2), hours=100)
    displace(reservation, incident_record(pool=pool, start=at(3), end=at(3, 10)), lost=8)
    meter_usage(until=at(2, month=4))
    invoices_draft(now=at(2, month=4))

    # inside the grace period, March's invoice is still a draft
    assert sla_credits_issue(now=at(2, month=4)).done == 0
    assert not SlaCredit.objects.exists()

    invoices_finalize_due(now=AFTER_GRACE)
    assert sla_credits_issue(now=AFTER_GRACE).done == 1
    assert SlaCredit.objects.get().amount == Decimal("2160.00")


@pytest.mark.django_db
def test_hours_lost_outside_the_month_or_after_a_cancellation_are_not_promised(tenant, pool):
    # given 8 GPUs from 31 March 14:00 to 1 April 10:00 (20 h), cancelled at 18:00 on
    # 31 March, and an outage from 31 March 16:00 to 1 April 02:00 that took them all
    reservation = reserve(
        tenant=tenant,
        pool=pool,
        start=at(31, 14),
        hours=20,
        status="cancelled",
        capacity_until=at(31, 18),
        charge=Decimal("96.00"),
    )
    displace(reservation, incident_record(pool=pool, start=at(31, 16), end=at(2, month=4)), lost=8)

    close_march()

    # then March promised 4 h (2 delivered, 2 lost): 50 % delivered -> 100 % of 48.00
    credit_row = SlaCredit.objects.get()
    assert (credit_row.promised_gpu_hours, credit_row.delivered_gpu_hours) == (32, 16)
    assert credit_row.amount == Decimal("48.00")


@pytest.mark.django_db
def test_the_sla_credit_is_capped_at_what_the_invoice_can_still_credit(tenant, pool):
    reservation = reserve(tenant=tenant, pool=pool, start=at(2), hours=100)
    displace(reservation, incident_record(pool=pool, start=at(3), end=at(3, 10)), lost=8)
    meter_usage(until=AFTER_GRACE)
    invoices_draft(now=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)
    invoice = Invoice.objects.get()
    credit_note_create(invoice_id=invoice.pk, amount=Decimal("2000.00"), reason="goodwill")

    sla_credits_issue(now=AFTER_GRACE)

    assert CreditNote.objects.get(reason="sla").amount == Decimal("160.00")
    assert SlaCredit.objects.get().amount == Decimal("160.00")


@pytest.mark.django_db
def test_the_rules_are_data(tenant, pool):
    # given an operator who made the 99 % tier give 40 %
    SlaCreditRule.objects.filter(kind="availability", below_percent=99).update(credit_percent=40)
    reservation = reserve(tenant=tenant, pool=pool, start=at(2), hours=100)
    displace(reservation, incident_record(pool=pool, start=at(3), end=at(3, 4)), lost=8)

    close_march()

    # 96 %: 40 % of 2304.00
    assert SlaCredit.objects.get().amount == Decimal("921.60")


class WorkerKilled(Exception):
    pass


@pytest.mark.django_db
def test_a_close_that_dies_half_way_leaves_no_credit_and_the_rerun_gives_it(
    tenant, pool, monkeypatch
):
    reservation = reserve(tenant=tenant, pool=pool, start=at(2), hours=100)
    displace(reservation, incident_record(pool=pool, start=at(3), end=at(3, 10)), lost=8)
    meter_usage(until=AFTER_GRACE)
    invoices_draft(now=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)

    # when the run dies after issuing the credit note, while recording the credits
    def die(*args, **kwargs):
        raise WorkerKilled()

    monkeypatch.setattr(sla.SlaCredit.objects, "bulk_create", die)
    with pytest.raises(WorkerKilled):
        sla_credits_issue(now=AFTER_GRACE)

    # then no note, no number used, no ledger entry
    assert not CreditNote.objects.exists()
    assert not LedgerEntry.objects.filter(kind="credit_note").exists()

    monkeypatch.undo()
    assert sla_credits_issue(now=AFTER_GRACE).done == 1
    assert CreditNote.objects.get().number == "CN-2026-000001"


@pytest.mark.django_db
def test_a_displacement_across_a_month_end_counts_in_each_month_once_it_closes(tenant, pool):
    # given 8 GPUs from 31 March 12:00 to 1 April 12:00, all lost from 20:00 to 04:00
    reservation = reserve(tenant=tenant, pool=pool, start=at(31, 12), hours=24)
    displace(
        reservation, incident_record(pool=pool, start=at(31, 20), end=at(1, 4, month=4)), lost=8
    )

    # when March closes
    close_march()

    # then March promised 12 h and delivered 8 (66.7 %: 100 % of 192.00); April is not
    # assessed before it closes
    march = SlaCredit.objects.get()
    assert (march.period_start, march.promised_gpu_hours, march.delivered_gpu_hours) == (
        MARCH,
        96,
        64,
    )
    assert march.amount == Decimal("192.00")

    # when April closes: 12 h promised, 8 delivered
    meter_usage(until=at(3, 1, month=5))
    invoices_draft(now=at(3, 1, month=5))
    invoices_finalize_due(now=at(3, 1, month=5))
    assert sla_credits_issue(now=at(3, 1, month=5)).done == 1
    april = SlaCredit.objects.get(period_start=at(1, month=4))
    assert (april.promised_gpu_hours, april.delivered_gpu_hours, april.amount) == (
        96,
        64,
        Decimal("192.00"),
    )


@pytest.mark.django_db
def test_an_outage_recorded_after_the_invoice_credits_what_a_timely_one_would_have(tenant, pool):
    # given March issued at 2400.00 (8 GPUs x 100 h at 3.00) before anyone recorded the outage
    # that took the GPUs for 4 of those hours
    reservation = reserve(tenant=tenant, pool=pool, start=at(2), hours=100)
    close_march()
    outage = incident_record(pool=pool, start=at(3), end=at(3, 4))
    displace(reservation, outage, lost=8)

    # when the hourly correction run and the next daily close run
    usage_corrections_apply(now=at(4, month=4))
    sla_credits_issue(now=at(4, 1, month=4))

    # then the 4 hours come back (96.00), and the SLA credit is 25 % (96 % delivered) of the
    # 2304.00 the month really cost, as if the outage had been known in time
    assert list(CreditNote.objects.order_by("number").values_list("reason", "amount")) == [
        ("correction", Decimal("96.00")),
        ("sla", Decimal("576.00")),
    ]
    assert SlaCredit.objects.get().incident == outage
