"""A finalized invoice never changes: not through the ORM, not through a queryset update or raw
SQL (PostgreSQL triggers), not through the API, not through the admin."""

from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from billing.errors import DocumentImmutable
from billing.models import (
    CreditNote,
    DocumentSequence,
    Invoice,
    InvoiceLine,
    Payment,
    UsageRecord,
)
from billing.services.credit_notes import credit_note_create
from billing.services.invoicing import invoices_draft, invoices_finalize_due
from billing.services.metering import meter_usage
from billing.services.payments import invoice_payment_record
from marketplace.models import LedgerEntry
from tests.billing.conftest import at, reserve, tenant_client

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


def refused_by_database(statement) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        statement()


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
    refused_by_database(lambda: invoices.update(total=Decimal("1.00"), subtotal=Decimal("1.00")))
    refused_by_database(lambda: invoices.update(number="INV-2026-999999"))
    refused_by_database(lambda: invoices.update(status="draft", number=None))
    refused_by_database(lambda: invoices.delete())
    lines = InvoiceLine.objects.filter(invoice=finalized)
    refused_by_database(lambda: lines.update(amount=Decimal("1.00")))
    refused_by_database(lambda: lines.delete())
    refused_by_database(
        lambda: InvoiceLine.objects.bulk_create(
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
    )
    refused_by_database(lambda: UsageRecord.objects.update(amount=Decimal(0)))
    refused_by_database(lambda: UsageRecord.objects.all().delete())

    def raw_sql() -> None:
        with connection.cursor() as cursor:
            cursor.execute("UPDATE billing_invoice SET total = 0, subtotal = 0")

    refused_by_database(raw_sql)
    finalized.refresh_from_db()
    assert (finalized.total, finalized.number) == (Decimal("240.00"), "INV-2026-000001")


@pytest.mark.django_db
def test_only_the_move_to_paid_or_void_is_allowed_on_a_finalized_invoice(finalized):
    Invoice.objects.filter(pk=finalized.pk).update(status="paid", paid_at=AFTER_GRACE)
    refused_by_database(lambda: Invoice.objects.filter(pk=finalized.pk).update(status="void"))
    assert Invoice.objects.get().status == "paid"


@pytest.mark.django_db
def test_the_ledger_credit_notes_payments_and_counters_are_append_only(finalized):
    invoice_payment_record(invoice_id=finalized.pk, amount=Decimal("100.00"), reference="w-1")
    credit_note_create(invoice_id=finalized.pk, amount=Decimal("10.00"), reason="goodwill")

    refused_by_database(lambda: LedgerEntry.objects.update(amount=Decimal("5.00")))
    refused_by_database(lambda: LedgerEntry.objects.all().delete())
    refused_by_database(lambda: CreditNote.objects.update(amount=Decimal("5.00")))
    refused_by_database(lambda: Payment.objects.all().delete())
    refused_by_database(lambda: DocumentSequence.objects.update(last_number=0))
    with pytest.raises(DocumentImmutable):
        CreditNote.objects.get().save()
    assert LedgerEntry.objects.count() == 3


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
