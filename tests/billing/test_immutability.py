"""A finalized invoice never changes: not through the ORM, not through a queryset update or raw
SQL (PostgreSQL triggers), not through the API, not through the admin."""

import re
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import ProtectedError
from django.urls import reverse

from billing.errors import DocumentImmutable
from billing.models import (
    CreditNote,
    DocumentSequence,
    Invoice,
    InvoiceLine,
    LedgerEntry,
    Payment,
    UsageRecord,
)
from billing.services.credit_notes import credit_note_create
from billing.services.invoicing import invoices_draft, invoices_finalize_due
from billing.services.metering import meter_usage
from billing.services.payments import invoice_payment_record
from tests.billing.conftest import at, reserve, tenant_client
from tests.db_helpers import raises_restrict_violation

AFTER_GRACE = at(3, 1, month=4)


@pytest.fixture
def finalized(tenant, pool) -> Invoice:
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
    meter_usage(until=AFTER_GRACE)
    invoices_draft(now=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)
    invoice = Invoice.objects.get()
    assert (invoice.status, invoice.total) == ("finalized", Decimal("240.00"))
    return invoice


# What the triggers of billing/migrations/0002 and marketplace/migrations/0003 say.
INVOICE_ISSUED = "invoice INV-2026-000001 is issued: only finalized -> paid or void may change it"


def raw_sql(statement: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


@pytest.mark.django_db
def test_the_orm_refuses_to_save_or_delete_a_finalized_invoice(finalized):
    finalized.total = Decimal("1.00")
    with pytest.raises(DocumentImmutable):
        finalized.save()
    with pytest.raises(DocumentImmutable):
        Invoice.objects.get().save(update_fields=["total"])
    with pytest.raises(DocumentImmutable):
        Invoice.objects.get().delete()
    line = InvoiceLine.objects.get()
    line.amount = Decimal("1.00")
    with pytest.raises(DocumentImmutable):
        line.save()
    with pytest.raises(DocumentImmutable):
        line.delete()
    assert Invoice.objects.get().total == Decimal("240.00")


@pytest.mark.django_db
def test_the_database_refuses_updates_that_bypass_the_orm(finalized):
    invoices = Invoice.objects.filter(pk=finalized.pk)
    with raises_restrict_violation(INVOICE_ISSUED):
        invoices.update(total=Decimal("1.00"), subtotal=Decimal("1.00"))
    with raises_restrict_violation(INVOICE_ISSUED):
        invoices.update(number="INV-2026-999999")
    with raises_restrict_violation(INVOICE_ISSUED):
        invoices.update(status="draft", number=None)
    with raises_restrict_violation("invoice INV-2026-000001 is issued and cannot be deleted"):
        raw_sql("DELETE FROM billing_invoice WHERE id = %s", [finalized.pk])
    with pytest.raises(ProtectedError):  # the ORM stops first: lines and usage point at it
        invoices.delete()

    lines = InvoiceLine.objects.filter(invoice=finalized)
    lines_frozen = f"lines of issued invoice {finalized.pk} cannot change"
    with raises_restrict_violation(lines_frozen):
        lines.update(amount=Decimal("1.00"))
    with raises_restrict_violation(lines_frozen):
        lines.delete()
    with raises_restrict_violation(f"issued invoice {finalized.pk} cannot take lines"):
        InvoiceLine.objects.bulk_create(
            [
                InvoiceLine(
                    invoice=finalized,
                    reservation_id=lines.get().reservation_id,
                    kind="cancellation_fee",
                    description="sneaked in",
                    gross_amount=Decimal(1),
                    amount=Decimal(1),
                )
            ]
        )

    usage_billed = re.compile(rf"billing_usagerecord row \d+ is on issued invoice {finalized.pk}")
    with raises_restrict_violation(usage_billed):
        UsageRecord.objects.update(amount=Decimal(0))
    with raises_restrict_violation(usage_billed):
        UsageRecord.objects.all().delete()

    with raises_restrict_violation(INVOICE_ISSUED):
        raw_sql("UPDATE billing_invoice SET total = 0, subtotal = 0")

    finalized.refresh_from_db()
    assert (finalized.total, finalized.number) == (Decimal("240.00"), "INV-2026-000001")
    assert (InvoiceLine.objects.count(), UsageRecord.objects.count()) == (1, 10)


@pytest.mark.django_db
def test_only_the_move_to_paid_or_void_is_allowed_on_a_finalized_invoice(finalized):
    Invoice.objects.filter(pk=finalized.pk).update(status="paid", paid_at=AFTER_GRACE)
    with raises_restrict_violation(INVOICE_ISSUED):
        Invoice.objects.filter(pk=finalized.pk).update(status="void")
    assert Invoice.objects.get().status == "paid"


@pytest.mark.django_db
def test_the_ledger_credit_notes_payments_and_counters_are_append_only(finalized):
    invoice_payment_record(invoice_id=finalized.pk, amount=Decimal("100.00"), reference="w-1")
    credit_note_create(invoice_id=finalized.pk, amount=Decimal("10.00"), reason="goodwill")

    ledger_append_only = "ledger entries are append-only; post a correcting entry"
    with raises_restrict_violation(ledger_append_only):
        LedgerEntry.objects.update(amount=Decimal("5.00"))
    with raises_restrict_violation(ledger_append_only):
        LedgerEntry.objects.all().delete()
    with raises_restrict_violation("billing_creditnote is append-only"):
        CreditNote.objects.update(amount=Decimal("5.00"))
    with raises_restrict_violation("billing_payment is append-only"):
        Payment.objects.all().delete()
    with raises_restrict_violation("document numbers only move up"):
        DocumentSequence.objects.update(last_number=0)
    with pytest.raises(DocumentImmutable):
        CreditNote.objects.get().save()
    assert LedgerEntry.objects.count() == 3
    assert list(CreditNote.objects.values_list("amount", flat=True)) == [Decimal("10.00")]
    assert list(Payment.objects.values_list("amount", flat=True)) == [Decimal("100.00")]


@pytest.mark.django_db
def test_a_draft_stays_editable_for_the_billing_runs(tenant, pool):
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
    meter_usage(until=at(3))
    invoices_draft(now=at(3))
    draft = Invoice.objects.get()

    Invoice.objects.filter(pk=draft.pk).update(tax_rate_percent=Decimal("5.00"))
    InvoiceLine.objects.filter(invoice=draft).delete()

    assert InvoiceLine.objects.count() == 0


@pytest.mark.django_db
def test_the_api_has_no_way_to_write_an_invoice(finalized, tenant):
    client = tenant_client(tenant)
    detail = f"/api/v1/invoices/{finalized.pk}/"

    for method in (client.put, client.patch, client.delete):
        assert method(detail, {"total": "1.00"}).status_code == 405
    assert client.post("/api/v1/invoices/", {"total": "1.00"}).status_code == 405
    assert Invoice.objects.get().total == Decimal("240.00")


@pytest.mark.django_db
def test_the_admin_shows_invoices_read_only(finalized, admin_client):
    url = reverse("admin:billing_invoice_change", args=[finalized.pk])

    page = admin_client.get(url)
    response = admin_client.post(url, {"total": "1.00", "status": "draft"})

    assert page.status_code == 200
    assert b"INV-2026-000001" in page.content
    assert b'name="total"' not in page.content
    assert response.status_code == 403
    assert (
        admin_client.post(
            reverse("admin:billing_invoice_delete", args=[finalized.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert admin_client.get(reverse("admin:billing_invoice_add")).status_code == 403
    assert Invoice.objects.get().total == Decimal("240.00")
    assert Invoice.objects.filter(pk=finalized.pk).exists()
