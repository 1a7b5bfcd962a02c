"""Invoice and credit-note numbers: one gapless series per year of issue, never a number twice,
however many tenants are finalized at once."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import transaction

from billing.models import DocumentSequence, Invoice
from billing.services.credit_notes import credit_note_create
from billing.services.invoicing import invoice_finalize, invoices_draft, invoices_finalize_month
from billing.services.metering import meter_usage
from billing.services.numbering import INVOICE_SERIES, numbers_issue
from tests.billing.conftest import at, reserve
from tests.factories import TenantFactory
from tests.locking import Worker, wait_until_blocked
from tests.marketplace.test_concurrency import race

AFTER_GRACE = at(3, 1, month=4)  # 3 April 2026 01:00: March can be finalized


def draft_march(tenants, pool) -> dict[int, int]:
    """A March draft for each tenant; returns tenant id -> draft id."""
    for tenant in tenants:
        reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=5, gpus=8)
    meter_usage(until=at(3))
    invoices_draft(now=at(3))
    return dict(Invoice.objects.values_list("tenant_id", "pk"))


@pytest.mark.django_db
def test_a_2026_number_comes_before_the_2027_ones_and_each_year_restarts(pool):
    # given November 2026 usage for one tenant and December 2026 usage for two
    first, second = TenantFactory(), TenantFactory()
    reserve(tenant=first, pool=pool, start=at(2, month=11), hours=5)
    for tenant in (first, second):
        reserve(tenant=tenant, pool=pool, start=at(2, month=12), hours=5)
    with time_machine.travel(at(10, month=12), tick=False):  # metering never passes now
        meter_usage(until=at(10, month=12))
    invoices_draft(now=at(10, month=12))

    # when November is finalized in December 2026, and December in January 2027
    invoices_finalize_month(period_start=at(1, month=11), now=at(3, month=12))
    with time_machine.travel(at(3, month=1, year=2027), tick=False):
        meter_usage(until=at(3, month=1, year=2027))
    invoices_finalize_month(period_start=at(1, month=12), now=at(3, month=1, year=2027))
    november = Invoice.objects.get(period_start=at(1, month=11))
    cn_2026 = credit_note_create(
        invoice_id=november.pk, amount=Decimal("1.00"), reason="goodwill", now=at(20, month=12)
    )
    cn_2027 = credit_note_create(
        invoice_id=november.pk,
        amount=Decimal("1.00"),
        reason="goodwill",
        now=at(5, month=1, year=2027),
    )

    # then the 2026 series starts at 1, and 2027 starts again at 1 rather than going on
    assert sorted(Invoice.objects.values_list("period_start__month", "tenant_id", "number")) == [
        (11, first.pk, "INV-2026-000001"),
        (12, first.pk, "INV-2027-000001"),
        (12, second.pk, "INV-2027-000002"),
    ]
    assert (cn_2026.number, cn_2027.number) == ("CN-2026-000001", "CN-2027-000001")


@pytest.mark.django_db(transaction=True)
def test_eight_tenants_finalized_at_once_get_eight_distinct_gapless_numbers(pool):
    # given eight tenants with a March draft each
    drafts = list(draft_march([TenantFactory() for _ in range(8)], pool).values())

    # when the eight drafts are finalized at the same moment, each in its own transaction
    race(8, lambda i: [invoice_finalize(invoice_id=drafts[i], now=AFTER_GRACE).number])

    # then they hold numbers 1 to 8 of 2026, each once
    assert sorted(Invoice.objects.values_list("number", flat=True)) == [
        f"INV-2026-{n:06d}" for n in range(1, 9)
    ]


@pytest.mark.django_db(transaction=True)
def test_finalizing_waits_for_the_number_counter_and_takes_the_next_number(pool):
    # given a March draft, 2026's counter, and another transaction that has just taken 2026's
    # first number
    (draft,) = draft_march([TenantFactory()], pool).values()
    DocumentSequence.objects.create(series=INVOICE_SERIES, year=2026, last_number=0)
    with transaction.atomic():
        assert numbers_issue(series=INVOICE_SERIES, year=2026, count=1) == ["INV-2026-000001"]

        # when the draft is finalized meanwhile
        finalizing = Worker(
            lambda: invoice_finalize(invoice_id=draft, now=AFTER_GRACE).number, "finalization"
        )
        wait_until_blocked(finalizing)

    # then it waited for the counter and took the number after it
    assert finalizing.join() == "INV-2026-000002"


@pytest.mark.django_db
def test_a_month_is_numbered_in_period_tenant_and_currency_order(pool):
    # given two tenants' March drafts, created in reverse order
    second, first = TenantFactory(), TenantFactory()
    draft_march([first, second], pool)

    # when March is finalized in one run
    invoices_finalize_month(period_start=at(1), now=AFTER_GRACE + timedelta(days=1))

    # then numbers follow the tenants' ids
    assert list(Invoice.objects.order_by("tenant_id").values_list("number", flat=True)) == [
        "INV-2026-000001",
        "INV-2026-000002",
    ]
