from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import CreditNote, Invoice, Payment
from billing.services.invoicing import invoices_draft, invoices_finalize_due
from billing.services.metering import meter_usage
from marketplace import selectors as marketplace_selectors
from marketplace.models import LedgerEntry
from tests.billing.conftest import at, reserve

AFTER_GRACE = at(3, 1, month=4)


@pytest.fixture
def finalized(tenant, pool) -> Invoice:
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
    meter_usage(until=AFTER_GRACE)
    invoices_draft(now=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)
    return Invoice.objects.get()


@pytest.mark.django_db
def test_billing_admin_pages_render(admin_client, finalized):
    for name in (
        "billing_invoice_changelist",
        "billing_usagerecord_changelist",
        "billing_charge_changelist",
        "billing_payment_changelist",
        "billing_creditnote_changelist",
        "billing_tenantaccount_changelist",
        "billing_payment_add",
        "billing_creditnote_add",
    ):
        assert admin_client.get(reverse(f"admin:{name}")).status_code == 200, name
    account = admin_client.get(
        reverse("admin:billing_tenantaccount_change", args=[finalized.tenant_id])
    )
    assert b"INV-2026-000001" in account.content  # the ledger inline


@pytest.mark.django_db
def test_an_operator_records_a_payment_in_the_admin(admin_client, finalized):
    response = admin_client.post(
        reverse("admin:billing_payment_add"),
        {
            "invoice": finalized.pk,
            "amount": "240.00",
            "reference": "BANK-REF-1",
            "received_at_0": "2026-04-05",
            "received_at_1": "10:00:00",
        },
    )

    assert response.status_code == 302
    finalized.refresh_from_db()
    assert finalized.status == "paid"
    payment = Payment.objects.get()
    assert (payment.amount, payment.recorded_by) == (Decimal("240.00"), "admin")


@pytest.mark.django_db
def test_the_admin_refuses_a_credit_note_beyond_the_invoice(admin_client, finalized):
    url = reverse("admin:billing_creditnote_add")

    refused = admin_client.post(url, {"invoice": finalized.pk, "amount": "240.01", "reason": "sla"})
    accepted = admin_client.post(url, {"invoice": finalized.pk, "amount": "24.00", "reason": "sla"})

    assert refused.status_code == 200
    assert b"At most 240.00 USD can still be credited" in refused.content
    assert accepted.status_code == 302
    assert list(CreditNote.objects.values_list("number", "amount")) == [
        ("CN-2026-000001", Decimal("24.00"))
    ]


@pytest.mark.django_db
def test_an_operator_tops_up_a_tenant_with_the_admin_action(admin_client, tenant):
    url = reverse("admin:billing_tenantaccount_changelist")
    selected = {"action": "top_up", "_selected_action": [tenant.pk]}

    form = admin_client.post(url, selected)
    done = admin_client.post(url, {**selected, "amount": "500.00", "reference": "wire-7"})

    assert form.status_code == 200
    assert b"Record top-up" in form.content
    assert done.status_code == 302
    assert list(LedgerEntry.objects.values_list("kind", "amount", "reference")) == [
        ("top_up", Decimal("500.00"), "wire-7")
    ]
    assert marketplace_selectors.ledger_balance(tenant=tenant) == Decimal("500.00")


@pytest.mark.django_db
def test_the_reports_page_and_its_csv_downloads(admin_client, finalized):
    page = admin_client.get(
        reverse("admin:billing_revenuereport_changelist") + "?from=2026-03&to=2026-04"
    )
    csv = admin_client.get(
        reverse("admin:billing_revenuereport_csv", args=["margin"]) + "?from=2026-03&to=2026-03"
    )

    assert page.status_code == 200
    assert b"Download CSV" in page.content
    assert b"aws-h100" in page.content
    assert csv.status_code == 200
    assert csv["Content-Type"].startswith("text/csv")
    lines = csv.content.decode().splitlines()
    assert lines[0].startswith("month,provider,pool,tier,currency")
    assert lines[1].endswith(",80,240.00,0.00,240.00,160.00,80.00,33.33")
    missing = reverse("admin:billing_revenuereport_csv", args=["nope"])
    assert admin_client.get(missing).status_code == 404


@pytest.mark.django_db
def test_voiding_from_the_admin(admin_client, finalized):
    admin_client.post(
        reverse("admin:billing_invoice_changelist"),
        {"action": "void", "_selected_action": [finalized.pk]},
    )

    finalized.refresh_from_db()
    assert finalized.status == "void"
