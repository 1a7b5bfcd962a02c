from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine

from billing.models import Invoice
from billing.services import accounts
from billing.services.credit_notes import credit_note_create
from billing.services.invoicing import invoices_draft, invoices_finalize_due
from billing.services.metering import meter_usage
from tests.billing.conftest import at, reserve, tenant_client

AFTER_GRACE = at(3, 1, month=4)
AFTER_DUE = at(4, month=5)  # March's invoice is due on 3 May (net 30)


@pytest.fixture
def billed(tenant, other_tenant, pool):
    """Acme: 240.00 in March (finalized, 40.00 credited), 48.00 so far in April (draft).
    Globex, busy in the same pool and hours: a March invoice of its own (including the hours
    of 10-11 March that Acme's usage tests read), a top-up, and an April draft."""
    mine = reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
    reserve(tenant=tenant, pool=pool, start=at(3, 0, month=4), hours=2)
    reserve(tenant=other_tenant, pool=pool, start=at(2, 10), hours=1)
    reserve(tenant=other_tenant, pool=pool, start=at(10, 18), hours=10, gpus=16)
    reserve(tenant=other_tenant, pool=pool, start=at(3, 0, month=4), hours=3)
    accounts.top_up_create(tenant=other_tenant, amount=Decimal("70.00"), reference="wire-g")
    meter_usage(until=AFTER_GRACE + timedelta(hours=1))
    invoices_draft(now=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)
    march = Invoice.objects.get(tenant=tenant, period_start=at(1))
    credit_note_create(invoice_id=march.pk, amount=Decimal("40.00"), reason="sla", now=AFTER_GRACE)
    return {"reservation": mine, "march": march}


@pytest.mark.django_db
def test_a_tenant_lists_its_own_invoices_newest_first(tenant, billed):
    with time_machine.travel(AFTER_DUE, tick=False):
        response = tenant_client(tenant).get("/api/v1/invoices/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    april, march = body["results"]
    assert (april["status"], april["number"], april["total"]) == ("draft", None, "48.00")
    assert march == {
        "id": billed["march"].pk,
        "number": "INV-2026-000001",
        "status": "finalized",
        "currency": "USD",
        "period_start": "2026-03-01T00:00:00Z",
        "period_end": "2026-04-01T00:00:00Z",
        "subtotal": "240.00",
        "discount_total": "0.00",
        "tax_rate_percent": "0.00",
        "tax_amount": "0.00",
        "total": "240.00",
        "prepaid_applied": "0.00",
        "amount_paid": "0.00",
        "amount_credited": "40.00",
        "amount_due": "200.00",
        "finalized_at": "2026-04-03T01:00:00Z",
        "due_at": "2026-05-03T01:00:00Z",  # net 30
        "overdue": True,
        "paid_at": None,
    }


@pytest.mark.django_db
def test_invoices_filter_by_status(tenant, billed):
    response = tenant_client(tenant).get("/api/v1/invoices/?status=finalized")

    assert [row["number"] for row in response.json()["results"]] == ["INV-2026-000001"]
    assert tenant_client(tenant).get("/api/v1/invoices/?status=nope").status_code == 400


@pytest.mark.django_db
def test_an_invoice_comes_with_its_lines_and_credit_notes(tenant, billed):
    response = tenant_client(tenant).get(f"/api/v1/invoices/{billed['march'].pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["lines"] == [
        {
            "kind": "usage",
            "reservation": str(billed["reservation"].pk),
            "description": (
                "8 x H100-SXM-80GB on aws-h100, 2026-03-02 10:00 to 2026-03-02 20:00 UTC"
            ),
            "gpu_model": "H100-SXM-80GB",
            "pool": "aws-h100",
            "gpus": 8,
            "hours": 10,
            "gpu_hours": "80.0000",
            "list_unit_price": "3.0000",
            "unit_price": "3.0000",
            "gross_amount": "240.00",
            "discount_amount": "0.00",
            "amount": "240.00",
            "first_hour": "2026-03-02T10:00:00Z",
            "last_hour": "2026-03-02T19:00:00Z",
        }
    ]
    assert [note["number"] for note in body["credit_notes"]] == ["CN-2026-000001"]


@pytest.mark.django_db
def test_another_tenants_invoice_is_not_found(other_tenant, billed):
    client = tenant_client(other_tenant)

    response = client.get(f"/api/v1/invoices/{billed['march'].pk}/")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert client.get("/api/v1/invoices/999999/").status_code == 404
    # Globex sees its own March invoice and April draft, none of Acme's
    own = client.get("/api/v1/invoices/").json()["results"]
    assert [(row["period_start"], row["total"]) for row in own] == [
        ("2026-04-01T00:00:00Z", "48.00"),  # 2 of its 3 hours metered so far
        ("2026-03-01T00:00:00Z", "504.00"),
    ]


@pytest.mark.django_db
def test_usage_is_aggregated_per_reservation_and_day(tenant, pool, billed):
    long_run = reserve(tenant=tenant, pool=pool, start=at(10, 20), hours=6, gpus=16)
    meter_usage(until=at(11, 12))

    response = tenant_client(tenant).get("/api/v1/usage/?from=2026-03-10&to=2026-03-11")

    assert response.status_code == 200
    rows = response.json()["results"]
    assert [(row["day"], row["hours"], row["gpu_hours"], row["amount"]) for row in rows] == [
        ("2026-03-10", 4, "64.0000", "192.0000"),
        ("2026-03-11", 2, "32.0000", "96.0000"),
    ]
    assert {row["reservation"] for row in rows} == {str(long_run.pk)}
    assert rows[0]["pool"] == "aws-h100"
    assert rows[0]["gpu_model"] == "h100-sxm-80gb"


@pytest.mark.django_db
def test_usage_defaults_to_this_month_and_validates_its_range(tenant, billed):
    client = tenant_client(tenant)

    with time_machine.travel(at(20, month=4), tick=False):
        this_month = client.get("/api/v1/usage/").json()["results"]
    assert [(row["day"], row["hours"]) for row in this_month] == [("2026-04-03", 2)]

    backwards = client.get("/api/v1/usage/?from=2026-03-10&to=2026-03-01")
    assert backwards.status_code == 400
    assert backwards.json()["code"] == "validation_error"
    assert "to" in backwards.json()["fields"]
    assert client.get("/api/v1/usage/?from=2025-01-01&to=2026-03-01").status_code == 400
    assert client.get("/api/v1/usage/?from=yesterday").status_code == 400


@pytest.mark.django_db
def test_the_balance_shows_what_the_credit_check_sees(tenant, billed):
    accounts.top_up_create(tenant=tenant, amount=Decimal("50.00"), reference="wire-1")

    with time_machine.travel(AFTER_DUE, tick=False):
        response = tenant_client(tenant).get("/api/v1/balance/")

    assert response.status_code == 200
    # ledger: -240.00 invoice + 40.00 credit note + 50.00 top-up; April's 2 hours (48.00) are
    # not on a finalized invoice yet
    assert response.json() == {
        "currency": "USD",
        "ledger_balance": "-150.00",
        "credit_limit": "1000000.00",
        "uninvoiced_tax": "0.00",
        "uninvoiced_commitments": "48.00",
        "credit_available": "999802.00",
        "outstanding_invoices": "200.00",
        "overdue_invoices": "200.00",
    }


@pytest.mark.django_db
def test_billing_endpoints_need_a_tenant_key(api_client, operator_client, billed):
    for url in ("/api/v1/invoices/", "/api/v1/usage/", "/api/v1/balance/"):
        assert api_client.get(url).status_code == 401
        assert operator_client.get(url).status_code == 403
