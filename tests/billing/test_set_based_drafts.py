"""Drafts are built set-based on PostgreSQL (INSERT ... SELECT of the lines, one UPDATE of the
totals) and in Python elsewhere (SQLite in development). Both follow the one rounding rule, so
the same usage gives the same lines and totals whichever builds them; and the draft run keeps
each transaction, and so the time a tenant's bookings wait for it, to a bounded batch."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction

from billing.models import Invoice, InvoiceLine
from billing.services import invoicing
from billing.services.invoicing import invoice_finalize, invoices_draft
from billing.services.metering import meter_usage
from marketplace.models import Tenant
from tests.billing.conftest import at, reserve
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

LINE_FIELDS = (
    "kind",
    "reservation_id",
    "description",
    "gpu_model",
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
TOTAL_FIELDS = ("subtotal", "discount_total", "tax_rate_percent", "tax_amount", "total")


def built(invoice_id: int, rebuild) -> tuple[list[tuple], tuple]:
    """The draft's lines and totals as ``rebuild`` leaves them (rolled back afterwards)."""
    tenants = {tenant.pk: tenant for tenant in Tenant.objects.all()}
    with transaction.atomic():
        rebuild({invoice_id}, tenants, at(5, month=4))
        lines = list(
            InvoiceLine.objects.filter(invoice_id=invoice_id)
            .order_by("first_hour", "kind", "reservation_id")
            .values_list(*LINE_FIELDS)
        )
        totals = Invoice.objects.filter(pk=invoice_id).values_list(*TOTAL_FIELDS).get()
        transaction.set_rollback(True)
    return lines, totals


def test_the_sql_and_the_python_builds_agree_on_a_reservation_split_over_two_invoices(pool):
    # given a reservation at 1.6650 a GPU-hour across the end of March (its March invoice
    # issued, rounded up), a discounted one within April, and a 19 % tax rate
    tenant = TenantFactory(tax_rate_percent=Decimal("19.00"))
    reserve(
        tenant=tenant,
        pool=pool,
        start=at(31, 21),
        hours=4,
        gpus=1,
        unit_price="1.6650",
        list_price="2.1115",
    )
    reserve(tenant=tenant, pool=pool, start=at(2, 10, month=4), hours=7, gpus=3)
    meter_usage(until=at(3, month=4))
    invoices_draft(now=at(3, month=4))
    march = Invoice.objects.get(period_start=at(1))
    invoice_finalize(invoice_id=march.pk, now=at(3, 1, month=4))
    april = Invoice.objects.get(period_start=at(1, month=4))

    # when the April draft is built by SQL and by Python
    by_sql = built(april.pk, lambda ids, tenants, now: invoicing._rebuild_sql(sorted(ids), now))
    by_python = built(april.pk, invoicing._rebuild_portable)

    # then they agree line by line and on the totals: April takes the remainder (6.66 - 5.00)
    assert by_sql == by_python
    lines, totals = by_sql
    assert [line[12] for line in lines] == [Decimal("1.66"), Decimal("63.00")]
    assert totals == (
        Decimal("65.12"),
        Decimal("0.46"),
        Decimal("19.00"),
        Decimal("12.29"),
        Decimal("76.95"),
    )


def test_the_draft_run_closes_a_batch_at_its_usage_budget(pool, monkeypatch):
    # given three tenants with 10, 10 and 30 metered hours, and a budget of 20 records
    tenants = [TenantFactory() for _ in range(3)]
    for tenant, hours in zip(tenants, (10, 10, 30), strict=True):
        reserve(tenant=tenant, pool=pool, start=at(2), hours=hours, gpus=1)
    meter_usage(until=at(3))
    monkeypatch.setattr(invoicing, "BATCH_USAGE_ROWS", 20)
    batches = []
    build = invoicing.invoices_draft_build
    monkeypatch.setattr(
        invoicing,
        "invoices_draft_build",
        lambda **kwargs: batches.append(kwargs["tenant_currencies"]) or build(**kwargs),
    )

    # when the draft run builds their drafts
    result = invoices_draft(now=at(3) + timedelta(hours=1))

    # then the first two share a transaction and the third, over budget alone, has its own
    assert [[tenant_id for tenant_id, _ in batch] for batch in batches] == [
        [tenants[0].pk, tenants[1].pk],
        [tenants[2].pk],
    ]
    assert result.done == 3
