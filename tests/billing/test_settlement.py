"""Settlement: a top-up pays unpaid invoices oldest due first, the ledger and the invoices
agree afterwards (ledger balance = surplus - sum of amount_due), nothing is counted twice;
invoices are due net 30 and overdue after that, and an optional policy suspends tenants
overdue for too long.

Acme's March invoice is 240.00, issued on 3 April at 01:00 and due on 3 May at 01:00 (net 30).
Globex, busy in the same pool and hours, has a March invoice of its own (24.00), so a top-up
or a suspension that forgets the tenant filter changes a figure asserted here."""

from datetime import timedelta
from decimal import Decimal
from functools import partial

import pytest
import time_machine
from django.test import override_settings
from django.urls import reverse

from billing import credit
from billing.errors import PaymentExceedsDue
from billing.models import Invoice, LedgerEntry, Payment
from billing.selectors import with_settlement
from billing.services import accounts
from billing.services.credit_notes import credit_note_create
from billing.services.invoicing import invoices_draft, invoices_finalize_due
from billing.services.metering import meter_usage
from billing.services.payments import (
    PaymentReferenceReused,
    application_reference,
    invoice_payment_record,
    top_up_create,
)
from billing.services.settlement import tenants_suspend_overdue
from billing.tasks import suspend_overdue_tenants_task
from events.models import Event
from marketplace.models import Tenant
from tests.billing.conftest import at, reserve, tenant_client
from tests.db_helpers import run_concurrently

ZERO = Decimal("0.00")
AFTER_GRACE = at(3, 1, month=4)  # March's invoices are issued
DUE = at(3, 1, month=5)  # ... and due, net 30
AFTER_APRIL_GRACE = at(3, 1, month=5)  # April's invoices are issued
TOP_UP_AT = at(20, 12, month=4)


def bill(now) -> None:
    meter_usage(until=now)
    invoices_draft(now=now)
    invoices_finalize_due(now=now)


@pytest.fixture
def march(tenant, other_tenant, pool) -> Invoice:
    """Acme's March invoice, 240.00 due; Globex's, 24.00 due."""
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)  # 8 x 10 h x 3.00
    reserve(tenant=other_tenant, pool=pool, start=at(2, 10), hours=1)  # 8 x 1 h x 3.00
    bill(AFTER_GRACE)
    return Invoice.objects.get(tenant=tenant)


def invoice_of(tenant: Tenant, month: int = 3) -> Invoice:
    return with_settlement(Invoice.objects.filter(tenant=tenant)).get(
        period_start=at(1, month=month)
    )


def amounts_due(tenant: Tenant) -> Decimal:
    return sum(
        with_settlement(
            Invoice.objects.filter(tenant=tenant, currency=tenant.currency, status="finalized")
        ).values_list("amount_due", flat=True),
        ZERO,
    )


def assert_ledger_agrees(tenant: Tenant, *, surplus: Decimal = ZERO) -> None:
    """The ledger and the invoices tell the same story: what the tenant owes on its invoices,
    less the prepaid credit no invoice took."""
    assert credit.ledger_balance(tenant=tenant) == surplus - amounts_due(tenant)


def applications(tenant: Tenant) -> list[tuple[str, Decimal, str]]:
    return list(
        Payment.objects.filter(tenant=tenant, method="prepaid_credit")
        .order_by("pk")
        .values_list("invoice__number", "amount", "reference")
    )


# --- a top-up settles invoices ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_top_up_of_exactly_the_amount_due_pays_the_invoice(tenant, other_tenant, march):
    assert_ledger_agrees(tenant)  # -240.00 on the ledger, 240.00 due

    entry = top_up_create(
        tenant=tenant, amount=Decimal("240.00"), reference="wire-1", now=TOP_UP_AT
    )

    invoice = invoice_of(tenant)
    assert (invoice.status, invoice.paid_at) == ("paid", TOP_UP_AT)
    assert (invoice.amount_paid, invoice.amount_due) == (Decimal("240.00"), ZERO)
    assert applications(tenant) == [
        ("INV-2026-000001", Decimal("240.00"), "wire-1/INV-2026-000001")
    ]
    # the top-up is the only new ledger entry: the application posts nothing
    assert list(
        LedgerEntry.objects.filter(tenant=tenant).values_list("kind", "amount", "reference")
    ) == [
        ("invoice", Decimal("-240.00"), "INV-2026-000001"),
        ("top_up", Decimal("240.00"), "wire-1"),
    ]
    assert entry.reference == "wire-1"
    assert credit.ledger_balance(tenant=tenant) == ZERO
    assert_ledger_agrees(tenant)
    paid = Event.objects.get(tenant_id=tenant.pk, type="invoice.paid")
    assert {k: paid.data[k] for k in ("number", "status", "amount_paid", "amount_due")} == {
        "number": "INV-2026-000001",
        "status": "paid",
        "amount_paid": "240.00",
        "amount_due": "0.00",
    }
    # Globex's invoice is not Acme's to pay
    assert invoice_of(other_tenant).amount_due == Decimal("24.00")
    assert not Payment.objects.filter(tenant=other_tenant).exists()


@pytest.mark.django_db
def test_a_smaller_top_up_pays_part_of_the_invoice(tenant, march):
    top_up_create(tenant=tenant, amount=Decimal("100.00"), reference="wire-1", now=TOP_UP_AT)

    invoice = invoice_of(tenant)
    assert (invoice.status, invoice.paid_at) == ("finalized", None)
    assert (invoice.amount_paid, invoice.amount_due) == (Decimal("100.00"), Decimal("140.00"))
    assert credit.ledger_balance(tenant=tenant) == Decimal("-140.00")
    assert_ledger_agrees(tenant)
    assert not Event.objects.filter(tenant_id=tenant.pk, type="invoice.paid").exists()


@pytest.mark.django_db
def test_a_larger_top_up_pays_the_invoice_and_leaves_the_rest_as_credit(tenant, pool, march):
    top_up_create(tenant=tenant, amount=Decimal("300.00"), reference="wire-1", now=TOP_UP_AT)

    invoice = invoice_of(tenant)
    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == (
        "paid",
        Decimal("240.00"),
        ZERO,
    )
    assert credit.ledger_balance(tenant=tenant) == Decimal("60.00")
    assert_ledger_agrees(tenant, surplus=Decimal("60.00"))

    # the surplus is prepaid credit the next invoice takes at finalization, once
    reserve(tenant=tenant, pool=pool, start=at(3, 10, month=4), hours=4)  # 96.00
    bill(AFTER_APRIL_GRACE)
    april = invoice_of(tenant, month=4)
    assert (april.prepaid_applied, april.amount_paid, april.amount_due) == (
        Decimal("60.00"),
        ZERO,
        Decimal("36.00"),
    )
    assert_ledger_agrees(tenant)


@pytest.mark.django_db
def test_a_credit_note_lowers_what_the_top_up_has_to_pay(tenant, march):
    credit_note_create(invoice_id=march.pk, amount=Decimal("40.00"), reason="sla", now=AFTER_GRACE)
    assert_ledger_agrees(tenant)  # -240.00 + 40.00, and 200.00 due

    top_up_create(tenant=tenant, amount=Decimal("150.00"), reference="wire-1", now=TOP_UP_AT)
    invoice = invoice_of(tenant)
    assert (invoice.status, invoice.amount_due) == ("finalized", Decimal("50.00"))
    assert_ledger_agrees(tenant)

    top_up_create(tenant=tenant, amount=Decimal("100.00"), reference="wire-2", now=TOP_UP_AT)
    invoice = invoice_of(tenant)
    assert (invoice.status, invoice.amount_credited, invoice.amount_paid, invoice.amount_due) == (
        "paid",
        Decimal("40.00"),
        Decimal("200.00"),
        ZERO,
    )
    assert applications(tenant) == [
        ("INV-2026-000001", Decimal("150.00"), "wire-1/INV-2026-000001"),
        ("INV-2026-000001", Decimal("50.00"), "wire-2/INV-2026-000001"),
    ]
    assert credit.ledger_balance(tenant=tenant) == Decimal("50.00")
    assert_ledger_agrees(tenant, surplus=Decimal("50.00"))


@pytest.mark.django_db
def test_a_top_up_pays_the_invoice_due_first_then_the_next(tenant, pool, march):
    reserve(tenant=tenant, pool=pool, start=at(3, 10, month=4), hours=4)  # 96.00
    bill(AFTER_APRIL_GRACE)
    assert_ledger_agrees(tenant)  # 336.00 due on two invoices

    top_up_create(tenant=tenant, amount=Decimal("300.00"), reference="wire-1", now=TOP_UP_AT)

    march_, april = invoice_of(tenant), invoice_of(tenant, month=4)
    assert (march_.status, march_.amount_due) == ("paid", ZERO)
    assert (april.status, april.amount_due) == ("finalized", Decimal("36.00"))
    assert applications(tenant) == [
        ("INV-2026-000001", Decimal("240.00"), "wire-1/INV-2026-000001"),
        ("INV-2026-000003", Decimal("60.00"), "wire-1/INV-2026-000003"),  # 000002 is Globex's
    ]
    assert credit.ledger_balance(tenant=tenant) == Decimal("-36.00")
    assert_ledger_agrees(tenant)


@pytest.mark.django_db
def test_the_invoice_due_first_is_paid_first_even_when_issued_later(tenant, pool):
    # March on 60-day terms (due 2 June), April on 7-day terms (due 10 May)
    Tenant.objects.filter(pk=tenant.pk).update(payment_terms_days=60)
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)  # 240.00
    bill(AFTER_GRACE)
    Tenant.objects.filter(pk=tenant.pk).update(payment_terms_days=7)
    reserve(tenant=tenant, pool=pool, start=at(3, 10, month=4), hours=4)  # 96.00
    bill(AFTER_APRIL_GRACE)
    assert invoice_of(tenant).due_at > invoice_of(tenant, month=4).due_at
    tenant.refresh_from_db()

    top_up_create(tenant=tenant, amount=Decimal("100.00"), reference="wire-1", now=DUE)

    assert (invoice_of(tenant, month=4).status, invoice_of(tenant).amount_due) == (
        "paid",
        Decimal("236.00"),
    )
    assert [number for number, *_ in applications(tenant)] == ["INV-2026-000002", "INV-2026-000001"]
    assert_ledger_agrees(tenant)


@pytest.mark.django_db
def test_the_same_top_up_again_changes_nothing(tenant, march):
    first = top_up_create(tenant=tenant, amount=Decimal("100.00"), reference="wire-1")
    again = top_up_create(tenant=tenant, amount=Decimal("100.00"), reference="wire-1")

    assert again.pk == first.pk
    assert LedgerEntry.objects.filter(tenant=tenant, kind="top_up").count() == 1
    assert applications(tenant) == [
        ("INV-2026-000001", Decimal("100.00"), "wire-1/INV-2026-000001")
    ]
    assert invoice_of(tenant).amount_due == Decimal("140.00")
    assert_ledger_agrees(tenant)
    # the same reference for another amount is refused, and changes nothing either
    with pytest.raises(accounts.LedgerReferenceReused):
        top_up_create(tenant=tenant, amount=Decimal("140.00"), reference="wire-1")
    assert invoice_of(tenant).amount_due == Decimal("140.00")
    assert Payment.objects.filter(tenant=tenant).count() == 1


@pytest.mark.django_db
def test_prepaid_credit_applied_posts_nothing_and_transfers_still_post(tenant, march):
    top_up_create(tenant=tenant, amount=Decimal("100.00"), reference="wire-1")
    invoice_payment_record(invoice_id=march.pk, amount=Decimal("140.00"), reference="bank-7")

    assert list(
        Payment.objects.filter(tenant=tenant).order_by("pk").values_list("method", "amount")
    ) == [("prepaid_credit", Decimal("100.00")), ("transfer", Decimal("140.00"))]
    assert list(
        LedgerEntry.objects.filter(tenant=tenant).values_list("kind", "amount", "reference")
    ) == [
        ("invoice", Decimal("-240.00"), "INV-2026-000001"),
        ("top_up", Decimal("100.00"), "wire-1"),
        ("payment", Decimal("140.00"), "bank-7"),  # the transfer, and only it
    ]
    assert invoice_of(tenant).status == "paid"
    assert_ledger_agrees(tenant)
    # a transfer cannot be recorded again under the application's reference
    with pytest.raises(PaymentReferenceReused):
        invoice_payment_record(
            invoice_id=march.pk, amount=Decimal("100.00"), reference="wire-1/INV-2026-000001"
        )


@pytest.mark.django_db
def test_a_top_up_whose_application_reference_is_taken_is_refused_whole(tenant, march):
    invoice_payment_record(
        invoice_id=march.pk, amount=Decimal("10.00"), reference="wire-1/INV-2026-000001"
    )

    with pytest.raises(PaymentReferenceReused):
        top_up_create(tenant=tenant, amount=Decimal("100.00"), reference="wire-1")

    assert not LedgerEntry.objects.filter(tenant=tenant, kind="top_up").exists()
    assert invoice_of(tenant).amount_due == Decimal("230.00")
    assert_ledger_agrees(tenant)


def test_long_top_up_references_still_give_distinct_application_references():
    first = application_reference("x" * 195 + "1", "INV-2026-000001")
    second = application_reference("x" * 195 + "2", "INV-2026-000001")

    assert application_reference("wire-1", "INV-2026-000001") == "wire-1/INV-2026-000001"
    assert len(first) == len(second) == 200
    assert first != second
    assert first.endswith("/INV-2026-000001")


@pytest.mark.django_db
def test_the_admin_top_up_action_settles_the_invoice(admin_client, tenant, march):
    url = reverse("admin:billing_tenantaccount_changelist")

    done = admin_client.post(
        url,
        {
            "action": "top_up",
            "_selected_action": [tenant.pk],
            "amount": "240.00",
            "reference": "wire-7",
        },
    )

    assert done.status_code == 302
    assert invoice_of(tenant).status == "paid"
    assert_ledger_agrees(tenant)


# --- races -------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_top_up_and_a_transfer_racing_for_one_invoice_never_pay_more_than_its_total(
    tenant, march
):
    def top_up() -> str:
        top_up_create(tenant=tenant, amount=Decimal("200.00"), reference="wire-t")
        return "topped up"

    def transfer() -> str:
        try:
            invoice_payment_record(
                invoice_id=march.pk, amount=Decimal("100.00"), reference="bank-p"
            )
        except PaymentExceedsDue:
            return "refused"
        return "paid"

    outcomes = run_concurrently(top_up, transfer)

    invoice = invoice_of(tenant)
    paid = sum(Payment.objects.filter(invoice=march).values_list("amount", flat=True), ZERO)
    assert paid <= invoice.total
    if outcomes[1] == "paid":  # the transfer first: the top-up pays the 140.00 left
        assert (invoice.status, paid) == ("paid", Decimal("240.00"))
        assert_ledger_agrees(tenant, surplus=Decimal("60.00"))
    else:  # the top-up first: 40.00 left, the transfer of 100.00 is too much
        assert (invoice.status, invoice.amount_due) == ("finalized", Decimal("40.00"))
        assert_ledger_agrees(tenant)


@pytest.mark.django_db(transaction=True)
def test_two_top_ups_at_once_pay_the_invoice_once(tenant, march):
    outcomes = run_concurrently(
        *(
            partial(top_up_create, tenant=tenant, amount=Decimal("200.00"), reference=reference)
            for reference in ("wire-a", "wire-b")
        )
    )

    assert len({entry.pk for entry in outcomes}) == 2
    invoice = invoice_of(tenant)
    assert (invoice.status, invoice.amount_paid) == ("paid", Decimal("240.00"))
    assert sorted(amount for _, amount, _ in applications(tenant)) == [
        Decimal("40.00"),
        Decimal("200.00"),
    ]
    assert Event.objects.filter(tenant_id=tenant.pk, type="invoice.paid").count() == 1
    assert_ledger_agrees(tenant, surplus=Decimal("160.00"))


# --- due dates and overdue -----------------------------------------------------------------------


@pytest.mark.django_db
def test_overdue_in_the_api_flips_once_the_due_date_passes(tenant, other_tenant, march):
    client = tenant_client(tenant)

    def shown(moment, query: str = "") -> list[dict]:
        with time_machine.travel(moment, tick=False):
            response = client.get(f"/api/v1/invoices/{query}")
        assert response.status_code == 200
        return [
            {k: row[k] for k in ("number", "due_at", "overdue", "amount_due")}
            for row in response.json()["results"]
        ]

    on_time = {
        "number": "INV-2026-000001",
        "due_at": "2026-05-03T01:00:00Z",
        "overdue": False,
        "amount_due": "240.00",
    }
    assert shown(DUE - timedelta(seconds=1)) == [on_time]
    assert shown(DUE + timedelta(seconds=1)) == [{**on_time, "overdue": True}]
    assert shown(DUE + timedelta(seconds=1), "?overdue=true") == [{**on_time, "overdue": True}]
    assert shown(DUE - timedelta(seconds=1), "?overdue=true") == []
    with time_machine.travel(DUE + timedelta(seconds=1), tick=False):
        balance = client.get("/api/v1/balance/").json()
    assert (balance["outstanding_invoices"], balance["overdue_invoices"]) == ("240.00", "240.00")

    # partly paid: still overdue; fully paid: not any more
    top_up_create(tenant=tenant, amount=Decimal("100.00"), reference="wire-1")
    assert shown(DUE + timedelta(days=1)) == [{**on_time, "overdue": True, "amount_due": "140.00"}]
    top_up_create(tenant=tenant, amount=Decimal("140.00"), reference="wire-2")
    assert shown(DUE + timedelta(days=1)) == [{**on_time, "amount_due": "0.00"}]
    with time_machine.travel(DUE + timedelta(days=1), tick=False):
        balance = client.get("/api/v1/balance/").json()
        detail = client.get(f"/api/v1/invoices/{march.pk}/").json()
    assert (balance["outstanding_invoices"], balance["overdue_invoices"]) == ("0.00", "0.00")
    assert (detail["status"], detail["due_at"], detail["overdue"]) == (
        "paid",
        "2026-05-03T01:00:00Z",
        False,
    )


@pytest.mark.django_db
def test_a_draft_has_no_due_date_and_is_never_overdue(tenant, pool, march):
    reserve(tenant=tenant, pool=pool, start=at(3, 10, month=4), hours=1)
    meter_usage(until=at(4, month=4))
    invoices_draft(now=at(4, month=4))

    with time_machine.travel(DUE + timedelta(days=100), tick=False):
        rows = tenant_client(tenant).get("/api/v1/invoices/?status=draft").json()["results"]

    assert [(row["due_at"], row["overdue"]) for row in rows] == [(None, False)]


@pytest.mark.django_db
def test_the_admin_filters_overdue_invoices(admin_client, tenant, other_tenant, march):
    top_up_create(tenant=tenant, amount=Decimal("240.00"), reference="wire-1")
    url = reverse("admin:billing_invoice_changelist")

    with time_machine.travel(DUE + timedelta(days=1), tick=False):
        overdue = admin_client.get(url, {"overdue": "yes"}).context["cl"].result_list
        not_overdue = admin_client.get(url, {"overdue": "no"}).context["cl"].result_list

    assert [(invoice.tenant_id, invoice.overdue) for invoice in overdue] == [
        (other_tenant.pk, True)
    ]
    assert [(invoice.tenant_id, invoice.overdue) for invoice in not_overdue] == [(tenant.pk, False)]


# --- suspension --------------------------------------------------------------------------------


def suspended_events(tenant: Tenant) -> int:
    return Event.objects.filter(tenant_id=tenant.pk, type="tenant.suspended").count()


@pytest.mark.django_db
@override_settings(BILLING_SUSPEND_OVERDUE_DAYS=10)
def test_a_tenant_overdue_for_more_than_the_setting_is_suspended_once(tenant, other_tenant, march):
    top_up_create(tenant=other_tenant, amount=Decimal("24.00"), reference="g-1")  # Globex pays

    assert tenants_suspend_overdue(now=DUE + timedelta(days=10)) == []
    assert tenants_suspend_overdue(now=DUE + timedelta(days=10, seconds=1)) == [tenant.pk]
    assert tenants_suspend_overdue(now=DUE + timedelta(days=11)) == []  # already suspended

    tenant.refresh_from_db()
    other_tenant.refresh_from_db()
    assert (tenant.status, other_tenant.status) == ("suspended", "active")
    assert (suspended_events(tenant), suspended_events(other_tenant)) == (1, 0)


@pytest.mark.django_db
@override_settings(BILLING_SUSPEND_OVERDUE_DAYS=0)
def test_the_daily_task_suspends_through_the_service_and_a_partly_paid_invoice_counts(
    tenant, other_tenant, march
):
    top_up_create(tenant=tenant, amount=Decimal("239.99"), reference="wire-1")
    top_up_create(tenant=other_tenant, amount=Decimal("24.00"), reference="g-1")

    result = suspend_overdue_tenants_task((DUE + timedelta(hours=1)).isoformat())

    assert result == {"suspended": 1, "tenants": [tenant.pk]}
    assert suspended_events(tenant) == 1
    assert list(Tenant.objects.order_by("pk").values_list("status", flat=True)) == [
        "suspended",
        "active",
    ]


@pytest.mark.django_db
@override_settings(BILLING_SUSPEND_OVERDUE_DAYS=None)
def test_nobody_is_suspended_while_the_setting_is_empty(tenant, other_tenant, march):
    assert tenants_suspend_overdue(now=DUE + timedelta(days=365)) == []
    assert suspend_overdue_tenants_task((DUE + timedelta(days=365)).isoformat()) == {
        "suspended": 0,
        "tenants": [],
    }
    assert set(Tenant.objects.values_list("status", flat=True)) == {"active"}
    assert not Event.objects.filter(type="tenant.suspended").exists()


@pytest.mark.django_db
@override_settings(BILLING_SUSPEND_OVERDUE_DAYS=10)
def test_a_tenant_that_paid_in_time_is_not_suspended(tenant, other_tenant, march):
    top_up_create(tenant=tenant, amount=Decimal("240.00"), reference="wire-1")
    credit_note_create(
        invoice_id=invoice_of(other_tenant).pk, amount=Decimal("24.00"), reason="sla"
    )

    assert tenants_suspend_overdue(now=DUE + timedelta(days=30)) == []
    assert set(Tenant.objects.values_list("status", flat=True)) == {"active"}
