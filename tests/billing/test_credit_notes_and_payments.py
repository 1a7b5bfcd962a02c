from decimal import Decimal

import pytest

from billing import credit
from billing.errors import (
    CreditExceedsInvoice,
    InvalidAmount,
    InvoiceNotFinalized,
    PaymentExceedsDue,
)
from billing.models import CreditNote, Invoice, LedgerEntry, Payment
from billing.selectors import invoice_settlement
from billing.services.credit_notes import credit_note_create
from billing.services.invoicing import invoices_draft, invoices_finalize_due
from billing.services.metering import meter_usage
from billing.services.payments import (
    PaymentReferenceReused,
    invoice_payment_record,
    top_up_create,
)
from tests.billing.conftest import at, reserve

AFTER_GRACE = at(3, 1, month=4)


@pytest.fixture
def finalized(tenant, pool) -> Invoice:
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)  # 240.00
    meter_usage(until=AFTER_GRACE)
    invoices_draft(now=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)
    return Invoice.objects.get()


@pytest.mark.django_db
def test_credit_notes_are_numbered_gaplessly_and_credit_the_ledger(tenant, finalized):
    first = credit_note_create(
        invoice_id=finalized.pk, amount=Decimal("40.00"), reason="sla", now=AFTER_GRACE
    )
    second = credit_note_create(
        invoice_id=finalized.pk, amount=Decimal("0.01"), reason="goodwill", now=AFTER_GRACE
    )

    assert (first.number, second.number) == ("CN-2026-000001", "CN-2026-000002")
    assert list(
        LedgerEntry.objects.filter(kind="credit_note").values_list("amount", "reference")
    ) == [(Decimal("40.00"), "CN-2026-000001"), (Decimal("0.01"), "CN-2026-000002")]
    assert credit.ledger_balance(tenant=tenant) == Decimal("-199.99")
    assert invoice_settlement(invoice=finalized).creditable == Decimal("199.99")


@pytest.mark.django_db
def test_a_credit_note_larger_than_what_remains_is_refused(finalized):
    credit_note_create(invoice_id=finalized.pk, amount=Decimal("200.00"), reason="refund")

    with pytest.raises(CreditExceedsInvoice) as refused:
        credit_note_create(invoice_id=finalized.pk, amount=Decimal("40.01"), reason="refund")

    assert refused.value.code == "credit_exceeds_invoice"
    assert refused.value.extra == {"creditable": "40.00"}
    assert CreditNote.objects.count() == 1
    # the exact remainder is fine, and settles the invoice
    credit_note_create(invoice_id=finalized.pk, amount=Decimal("40.00"), reason="refund")
    finalized.refresh_from_db()
    assert finalized.status == "paid"


@pytest.mark.django_db
def test_credit_notes_need_a_finalized_invoice_and_a_sensible_amount(tenant, pool, finalized):
    reserve(tenant=tenant, pool=pool, start=at(3, 10, month=4), hours=1)
    meter_usage(until=at(4, month=4))
    invoices_draft(now=at(4, month=4))
    draft = Invoice.objects.get(status="draft")

    with pytest.raises(InvoiceNotFinalized):
        credit_note_create(invoice_id=draft.pk, amount=Decimal("1.00"), reason="refund")
    for amount in (Decimal("0"), Decimal("-1"), Decimal("0.001")):
        with pytest.raises(InvalidAmount):
            credit_note_create(invoice_id=finalized.pk, amount=amount, reason="refund")
    assert not CreditNote.objects.exists()


@pytest.mark.django_db
def test_a_payment_for_the_amount_due_marks_the_invoice_paid(tenant, finalized):
    invoice_payment_record(
        invoice_id=finalized.pk,
        amount=Decimal("100.00"),
        reference="wire-1",
        received_at=AFTER_GRACE,
    )
    finalized.refresh_from_db()
    assert finalized.status == "finalized"

    invoice_payment_record(
        invoice_id=finalized.pk,
        amount=Decimal("140.00"),
        reference="wire-2",
        received_at=AFTER_GRACE,
    )

    finalized.refresh_from_db()
    assert (finalized.status, finalized.paid_at) == ("paid", AFTER_GRACE)
    assert credit.ledger_balance(tenant=tenant) == Decimal("0.00")


@pytest.mark.django_db
def test_recording_the_same_payment_twice_changes_nothing(finalized):
    first = invoice_payment_record(
        invoice_id=finalized.pk, amount=Decimal("100.00"), reference="wire-1"
    )
    again = invoice_payment_record(
        invoice_id=finalized.pk, amount=Decimal("100.00"), reference="wire-1"
    )

    assert again.pk == first.pk
    assert Payment.objects.count() == 1
    assert LedgerEntry.objects.filter(kind="payment").count() == 1
    with pytest.raises(PaymentReferenceReused):
        invoice_payment_record(invoice_id=finalized.pk, amount=Decimal("5.00"), reference="wire-1")


@pytest.mark.django_db
def test_a_payment_larger_than_the_amount_due_is_refused(finalized):
    credit_note_create(invoice_id=finalized.pk, amount=Decimal("40.00"), reason="sla")

    with pytest.raises(PaymentExceedsDue) as refused:
        invoice_payment_record(invoice_id=finalized.pk, amount=Decimal("200.01"), reference="w")

    assert refused.value.extra == {"amount_due": "200.00"}
    assert not Payment.objects.exists()


@pytest.mark.django_db
def test_top_ups_add_prepaid_credit_once_per_reference(tenant):
    credit_before = credit.credit_available(tenant=tenant)

    top_up_create(tenant=tenant, amount=Decimal("500.00"), reference="wire-9")
    top_up_create(tenant=tenant, amount=Decimal("500.00"), reference="wire-9")

    assert credit.ledger_balance(tenant=tenant) == Decimal("500.00")
    assert credit.credit_available(tenant=tenant) == credit_before + 500


@pytest.mark.django_db
def test_a_credit_note_without_a_memo_posts_a_clean_ledger_line(finalized):
    note = credit_note_create(invoice_id=finalized.pk, amount=Decimal("1.00"), reason="goodwill")

    entry = LedgerEntry.objects.get(kind="credit_note", reference=note.number)
    assert entry.memo == f"Credit note {note.number} on {finalized.number}"
