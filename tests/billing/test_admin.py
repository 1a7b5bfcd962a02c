from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse

from billing import credit
from billing.models import CreditNote, Invoice, LedgerEntry, Payment, SlaCreditRule, UsageRecord
from billing.services.corrections import usage_corrections_apply
from billing.services.credit_notes import credit_note_create
from billing.services.invoicing import invoice_void, invoices_draft, invoices_finalize_due
from billing.services.metering import meter_usage
from billing.services.payments import invoice_payment_record
from billing.services.sla import sla_credits_issue
from tests.admin_helpers import form_values, headings, rows, titled_tables
from tests.billing.conftest import at, displace, incident_record, reserve

AFTER_GRACE = at(3, 1, month=4)
PAID_AT = at(5, 9, month=4)
# How the admin shows those instants (UTC).
FINALIZED_SHOWN = "April 3, 2026, 1 a.m."
PAID_SHOWN = "April 5, 2026, 9 a.m."
DUE_SHOWN = "May 3, 2026, 1 a.m."  # finalized + 30 days (net 30)
AFTER_DUE = at(4, 9, month=5)


@pytest.fixture
def finalized(tenant, pool) -> Invoice:
    """March's invoice of Acme AI: 8 GPUs for 10 hours at 3.00 = 240.00, finalized on 3 April."""
    with time_machine.travel(AFTER_GRACE, tick=False):
        reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=10)
        meter_usage(until=AFTER_GRACE)
        invoices_draft(now=AFTER_GRACE)
        invoices_finalize_due(now=AFTER_GRACE)
    return Invoice.objects.get()


@pytest.fixture
def settled(finalized) -> Invoice:
    """The invoice with 100.00 paid and 10.00 credited on 5 April: 130.00 still due."""
    with time_machine.travel(PAID_AT, tick=False):
        invoice_payment_record(
            invoice_id=finalized.pk, amount=Decimal("100.00"), reference="w-1", recorded_by="ops"
        )
        credit_note_create(
            invoice_id=finalized.pk,
            amount=Decimal("10.00"),
            reason="goodwill",
            memo="slow start",
            issued_by="ops",
        )
    return finalized


def page(admin_client, name: str, *args):
    return admin_client.get(reverse(f"admin:{name}", args=args))


def form_errors(form) -> dict[str, list[str]]:
    return {name: [str(error) for error in errors] for name, errors in form.errors.items()}


def ledger(tenant) -> list[tuple[str, Decimal, str]]:
    return list(
        LedgerEntry.objects.filter(tenant=tenant)
        .order_by("id")
        .values_list("kind", "amount", "reference")
    )


CHARGE = ("invoice", Decimal("-240.00"), "INV-2026-000001")


@pytest.mark.django_db
def test_the_billing_lists_show_each_document_with_its_figures(admin_client, settled):
    invoice = str(settled)  # "INV-2026-000001 (<tenant id>)"
    reservation = str(settled.lines.get().reservation)

    with time_machine.travel(AFTER_DUE, tick=False):
        invoices = page(admin_client, "billing_invoice_changelist")
        accounts = page(admin_client, "billing_tenantaccount_changelist")
    assert rows(invoices) == [
        {
            "__str__": invoice,
            "tenant": "Acme AI",
            "period_start": "March 1, 2026, midnight",
            "currency": "USD",
            "status": "Finalized",
            "total": "240.00",
            "amount_due": "130.00",  # 240.00 - 100.00 paid - 10.00 credited
            "finalized_at": FINALIZED_SHOWN,
            "due_at": DUE_SHOWN,
            "overdue": "True",
        }
    ]
    usage = rows(page(admin_client, "billing_usagerecord_changelist"))
    assert [row.pop("hour") for row in usage] == [
        "March 2, 2026, 10 a.m.",
        "March 2, 2026, 11 a.m.",
        "March 2, 2026, noon",
        *(f"March 2, 2026, {hour} p.m." for hour in range(1, 8)),
    ]
    assert (
        usage
        == [
            {
                "reservation": reservation,
                "tenant": "Acme AI",
                "pool": "aws-h100",
                "gpus": "8",
                "unit_price": "3.0000",
                "amount": "24.0000",  # 8 GPUs x 3.00
                "provider_cost": "16.0000",  # 8 GPUs x 2.00
                "currency": "USD",
                "invoice": invoice,
            }
        ]
        * 10
    )
    assert rows(page(admin_client, "billing_payment_changelist")) == [
        {
            "received_at": PAID_SHOWN,
            "invoice": invoice,
            "tenant": "Acme AI",
            "method": "Bank transfer",
            "amount": "100.00",
            "currency": "USD",
            "reference": "w-1",
        }
    ]
    assert rows(page(admin_client, "billing_creditnote_changelist")) == [
        {
            "number": "CN-2026-000001",
            "issued_at": PAID_SHOWN,
            "invoice": invoice,
            "tenant": "Acme AI",
            "reason": "Goodwill",
            "amount": "10.00",
            "currency": "USD",
        }
    ]
    assert rows(accounts) == [
        {
            "name": "Acme AI",
            "currency": "USD",
            "credit_limit": "1000000.00",
            "ledger_balance": "-130.00",  # -240.00 invoiced + 100.00 paid + 10.00 credited
            "uninvoiced": "0.00",
            "credit_available": "999870.00",
            "overdue": "130.00",
        }
    ]
    charges = page(admin_client, "billing_charge_changelist")
    assert headings(charges)["h1"] == "Select charge to view"
    assert "0 charges" in charges.content.decode()


@pytest.mark.django_db
def test_the_invoice_page_shows_its_amounts_lines_credit_notes_and_payments(admin_client, settled):
    with time_machine.travel(PAID_AT, tick=False):  # before the due date
        response = page(admin_client, "billing_invoice_change", settled.pk)

    assert headings(response)["h1"] == "View invoice"
    assert headings(response)["h2"] == str(settled)
    values = form_values(response)
    assert values.pop("created_at")  # when the first billing run drafted it
    assert values == {
        "number": "INV-2026-000001",
        "tenant": "Acme AI",
        "currency": "USD",
        "status": "Finalized",
        "period_start": "March 1, 2026, midnight",
        "period_end": "April 1, 2026, midnight",
        "subtotal": "240.00",
        "discount_total": "0.00",
        "tax_rate_percent": "0.00",
        "tax_amount": "0.00",
        "total": "240.00",
        "prepaid_applied": "0.00",
        "amount_paid": "100.00",
        "amount_credited": "10.00",
        "amount_due": "130.00",
        "overdue": "False",
        "built_at": FINALIZED_SHOWN,
        "finalized_at": FINALIZED_SHOWN,
        "due_at": DUE_SHOWN,
        "paid_at": "-",
        "voided_at": "-",
        "void_reason": "-",
    }
    assert rows(response, within="lines-group") == [
        {
            "kind": "GPU usage",
            "description": (
                "8 x H100-SXM-80GB on aws-h100, 2026-03-02 10:00 to 2026-03-02 20:00 UTC"
            ),
            "hours": "10",
            "gpu_hours": "80.0000",
            "list_unit_price": "3.0000",
            "unit_price": "3.0000",
            "gross_amount": "240.00",
            "discount_amount": "0.00",
            "amount": "240.00",
        }
    ]
    assert rows(response, within="credit_notes-group") == [
        {
            "number": "CN-2026-000001",
            "issued_at": PAID_SHOWN,
            "reason": "Goodwill",
            "amount": "10.00",
            "memo": "slow start",
            "issued_by": "ops",
        }
    ]
    assert rows(response, within="payments-group") == [
        {
            "received_at": PAID_SHOWN,
            "method": "Bank transfer",
            "reference": "w-1",
            "amount": "100.00",
            "recorded_by": "ops",
        }
    ]


@pytest.mark.django_db
def test_the_document_pages_show_their_fields(admin_client, settled):
    invoice = str(settled)
    note, payment = CreditNote.objects.get(), Payment.objects.get()
    usage = UsageRecord.objects.order_by("hour").first()

    note_page = page(admin_client, "billing_creditnote_change", note.pk)
    payment_page = page(admin_client, "billing_payment_change", payment.pk)
    usage_page = page(admin_client, "billing_usagerecord_change", usage.pk)

    assert headings(note_page)["h2"] == "CN-2026-000001"
    assert form_values(note_page) == {
        "invoice": invoice,
        "amount": "10.00",
        "reason": "Goodwill",
        "memo": "slow start",
        "number": "CN-2026-000001",
        "tenant": "Acme AI",
        "currency": "USD",
        "issued_at": PAID_SHOWN,
        "issued_by": "ops",
    }
    assert headings(payment_page)["h2"] == "100.00 USD (w-1)"
    assert form_values(payment_page) == {
        "invoice": invoice,
        "amount": "100.00",
        "reference": "w-1",
        "received_at": PAID_SHOWN,
    }
    assert form_values(usage_page) == {
        "reservation": str(usage.reservation),
        "tenant": "Acme AI",
        "pool": "aws-h100",
        "hour": "March 2, 2026, 10 a.m.",
        "gpus": "8",
        "gpu_hours": "8.0000",
        "unit_price": "3.0000",
        "amount": "24.0000",
        "cost_per_gpu_hour": "2.0000",
        "provider_cost": "16.0000",
        "currency": "USD",
        "invoice": invoice,
    }


@pytest.mark.django_db
def test_the_tenant_account_page_shows_the_balance_and_the_ledger(admin_client, settled):
    with time_machine.travel(AFTER_DUE, tick=False):
        response = page(admin_client, "billing_tenantaccount_change", settled.tenant_id)

    assert headings(response)["h2"] == "Acme AI"
    assert form_values(response) == {
        "name": "Acme AI",
        "currency": "USD",
        "credit_limit": "1000000.00",
        "ledger_balance": "-130.00",
        "uninvoiced": "0.00",
        "overdue": "130.00",
    }
    assert [
        (row["kind"], row["amount"], row["reference"], row["memo"])
        for row in rows(response, within="ledger_entries-group")
    ] == [  # newest first
        (
            "Credit note",
            "10.00",
            "CN-2026-000001",
            "Credit note CN-2026-000001 on INV-2026-000001: slow start",
        ),
        ("Payment", "100.00", "w-1", "Payment for INV-2026-000001"),
        ("Invoice charge", "-240.00", "INV-2026-000001", "Invoice INV-2026-000001 for March 2026"),
    ]


@pytest.mark.django_db
def test_the_add_forms_for_payments_and_credit_notes(admin_client, finalized):
    with time_machine.travel(PAID_AT, tick=False):
        payment = page(admin_client, "billing_payment_add")
    credit_note = page(admin_client, "billing_creditnote_add")

    assert headings(payment)["h1"] == "Add payment"
    assert form_values(payment) == {  # received now, by default
        "invoice": "",
        "amount": "",
        "reference": "",
        "received_at_0": "2026-04-05",
        "received_at_1": "09:00:00",
    }
    assert headings(credit_note)["h1"] == "Add credit note"
    assert form_values(credit_note) == {
        "invoice": "",
        "amount": "",
        "reason": "---------",
        "memo": "",
    }


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

    # then the service's refusal is on the form, shown again, and nothing was written: no
    # credit note, no ledger entry, no number used up
    assert refused.status_code == 200
    assert form_errors(refused.context["adminform"].form) == {
        "__all__": [
            "At most 240.00 USD of INV-2026-000001 can still be credited; 240.01 was asked."
        ],
        "amount": ["The credit note exceeds what is still creditable on the invoice."],
    }
    assert not CreditNote.objects.exists()
    assert ledger(finalized.tenant) == [CHARGE]

    accepted = admin_client.post(url, {"invoice": finalized.pk, "amount": "24.00", "reason": "sla"})

    assert accepted.status_code == 302
    assert list(CreditNote.objects.values_list("number", "amount")) == [
        ("CN-2026-000001", Decimal("24.00"))
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("voided", "amount", "errors"),
    [
        (
            False,
            "240.01",
            {
                "__all__": ["240.00 USD is due on INV-2026-000001; 240.01 was recorded."],
                "amount": ["The payment exceeds the amount due on the invoice."],
            },
        ),
        (
            True,
            "10.00",
            {
                "__all__": ["Payments are recorded against finalized invoices; this one is void."],
                "invoice": ["Only a finalized invoice can take this."],
            },
        ),
    ],
    ids=["more-than-due", "void-invoice"],
)
def test_a_payment_the_service_refuses_is_shown_on_the_form(
    admin_client, finalized, voided, amount, errors
):
    if voided:
        invoice_void(invoice_id=finalized.pk, reason="issued in error")
    form = {
        "invoice": finalized.pk,
        "amount": amount,
        "reference": "BANK-REF-1",
        "received_at_0": "2026-04-05",
        "received_at_1": "10:00:00",
    }

    response = admin_client.post(reverse("admin:billing_payment_add"), form)

    assert response.status_code == 200
    assert form_errors(response.context["adminform"].form) == errors
    assert not Payment.objects.exists()
    assert not LedgerEntry.objects.filter(kind="payment").exists()
    finalized.refresh_from_db()
    assert finalized.status == ("void" if voided else "finalized")


@pytest.mark.django_db
def test_a_top_up_posted_on_the_ledger_page_settles_the_unpaid_invoice(admin_client, finalized):
    # given March's invoice of 240.00 unpaid; when an operator posts a top-up of 300.00
    with time_machine.travel(PAID_AT, tick=False):
        response = admin_client.post(
            reverse("admin:billing_ledgerentry_add"),
            {
                "tenant": finalized.tenant_id,
                "kind": "top_up",
                "amount": "300.00",
                "reference": "TOPUP-9",
                "memo": "wire",
            },
        )

    # then the top-up pays the invoice (prepaid credit applied) and 60.00 is left as credit
    assert response.status_code == 302
    finalized.refresh_from_db()
    assert (finalized.status, finalized.paid_at) == ("paid", PAID_AT)
    assert list(Payment.objects.values_list("method", "amount", "reference")) == [
        ("prepaid_credit", Decimal("240.00"), "TOPUP-9/INV-2026-000001")
    ]
    assert ledger(finalized.tenant) == [CHARGE, ("top_up", Decimal("300.00"), "TOPUP-9")]
    assert credit.ledger_balance(tenant=finalized.tenant) == Decimal("60.00")


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
    assert credit.ledger_balance(tenant=tenant) == Decimal("500.00")


@pytest.mark.django_db
def test_a_top_up_the_service_refuses_is_shown_on_the_action_form(admin_client, tenant):
    url = reverse("admin:billing_tenantaccount_changelist")
    selected = {"action": "top_up", "_selected_action": [tenant.pk]}
    admin_client.post(url, {**selected, "amount": "500.00", "reference": "wire-7"})

    # when the same reference is given for another amount
    refused = admin_client.post(url, {**selected, "amount": "600.00", "reference": "wire-7"})

    # then the form comes back with the refusal on the reference, and nothing more is posted
    assert refused.status_code == 200
    assert form_errors(refused.context["form"]) == {
        "__all__": ["wire-7 was posted as 500.00 USD, not 600.00 USD."],
        "reference": ["This reference was already posted with another amount or currency."],
    }
    assert refused.context["form"]["amount"].value() == "600.00"
    assert ledger(tenant) == [("top_up", Decimal("500.00"), "wire-7")]


MARGIN_COLUMNS = [
    "month",
    "provider",
    "currency",
    "sold_gpu_hours",
    "idle_gpu_hours",
    "invoiced_revenue",
    "credit_notes",
    "revenue",
    "sold_cost",
    "idle_cost",
    "margin",
    "margin_percent",
    "not_yet_invoiced",
    "fx_rates",
    "missing_fx_rates",
]


@pytest.mark.django_db
def test_the_reports_page_and_its_csv_downloads(admin_client, finalized, pool):
    provider = pool.region.provider.name
    report_page = admin_client.get(
        reverse("admin:billing_revenuereport_changelist") + "?from=2026-03&to=2026-04"
    )
    csv = admin_client.get(
        reverse("admin:billing_revenuereport_csv", args=["margin"]) + "?from=2026-03&to=2026-03"
    )

    assert headings(report_page)["h1"] == "Revenue & utilisation"
    # 80 GPU-hours sold at 3.00 and bought at 2.00; the 32-GPU pool had 744 h in March, 720 in
    # April. Idle at 2.00: March 23808 - 80 = 23728 GPU-hours; April up to where metering has
    # run (3 April 01:00), 49 h x 32 = 1568. March: 240.00 - 160.00 - 47456.00 = -47376.00.
    margin = {
        "provider": provider,
        "currency": "USD",
        "credit_notes": "0.00",
        "sold_cost": "0.00",
        "not_yet_invoiced": "0.00",
        "fx_rates": "",
        "missing_fx_rates": "",
    }
    margin_rows = [
        {
            **margin,
            "month": "2026-03",
            "sold_gpu_hours": "80",
            "idle_gpu_hours": "23728",
            "invoiced_revenue": "240.00",
            "revenue": "240.00",
            "sold_cost": "160.00",
            "idle_cost": "47456.00",
            "margin": "-47376.00",
            "margin_percent": "-19740.00",
        },
        {
            **margin,
            "month": "2026-04",
            "sold_gpu_hours": "0",
            "idle_gpu_hours": "1568",
            "invoiced_revenue": "0.00",
            "revenue": "0.00",
            "idle_cost": "3136.00",
            "margin": "-3136.00",
            "margin_percent": "–",
        },
    ]
    tables = titled_tables(report_page)
    assert tables.pop("Revenue, provider cost and margin per provider and month, in USD") == (
        margin_rows
    )
    assert tables.pop("Revenue, provider cost and margin per provider, pool and month, in USD") == [
        {**row, "pool": "aws-h100", "tier": "primary"} for row in margin_rows
    ]
    assert tables == {
        "Utilisation per pool and month (sold GPU-hours / available GPU-hours)": [
            {
                "month": month,
                "provider": provider,
                "pool": "aws-h100",
                "gpu_model": "H100-SXM-80GB",
                "tier": "primary",
                "sold_gpu_hours": sold,
                "available_gpu_hours": available,
                "utilisation_percent": percent,
            }
            for month, sold, available, percent in [
                ("2026-03", "80", "23808", "0.34"),
                ("2026-04", "0", "23040", "0.00"),
            ]
        ],
        "Share of revenue from backup capacity": [
            {
                "month": "2026-03",
                "currency": "USD",
                "revenue": "240.00",
                "backup_revenue": "0.00",
                "backup_share_percent": "0.00",
            }
        ],
    }
    for report in ("margin", "margin-pools", "utilisation", "backup-share"):
        link = reverse("admin:billing_revenuereport_csv", args=[report])
        assert f'href="{link}?from=2026-03&amp;to=2026-04"' in report_page.content.decode()
    assert csv.status_code == 200
    assert csv["Content-Type"].startswith("text/csv")
    assert csv["Content-Disposition"] == 'attachment; filename="margin-2026-03-2026-03.csv"'
    assert csv.content.decode().splitlines() == [
        ",".join(MARGIN_COLUMNS),
        f"2026-03,{provider},USD,80,23728,240.00,0.00,240.00,160.00,47456.00,-47376.00,"
        "-19740.00,0.00,,",
    ]
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


@pytest.mark.django_db
def test_the_sla_rules_are_listed_and_edited_in_the_admin(admin_client):
    listed = rows(page(admin_client, "billing_slacreditrule_changelist"))
    rule = SlaCreditRule.objects.get(kind="availability", below_percent=99)

    response = admin_client.post(
        reverse("admin:billing_slacreditrule_change", args=[rule.pk]),
        {"kind": "availability", "below_percent": "99.000", "credit_percent": "30.00"},
    )

    assert sorted((row["kind"], row["below_percent"], row["credit_percent"]) for row in listed) == [
        ("Availability below", "95.000", "100.00"),
        ("Availability below", "99.000", "25.00"),
        ("Availability below", "99.900", "10.00"),
        ("Recall inside the notice", "-", "50.00"),
    ]
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.credit_percent == Decimal("30.00")


@pytest.mark.django_db
def test_the_admin_refuses_an_sla_rule_the_policy_cannot_read(admin_client):
    response = admin_client.post(
        reverse("admin:billing_slacreditrule_add"),
        {"kind": "short_notice_recall", "below_percent": "90", "credit_percent": "20"},
    )

    assert response.status_code == 200
    assert "sla_rule_threshold_fits_kind" in response.content.decode()
    assert SlaCreditRule.objects.count() == 4


@pytest.mark.django_db
def test_sla_credits_and_usage_corrections_are_listed_read_only(admin_client, tenant, pool):
    # given March closed with an outage recorded before metering (an SLA credit) and one
    # recorded after finalization (a correction credit note)
    reservation = reserve(tenant=tenant, pool=pool, start=at(2), hours=100)
    before = incident_record(pool=pool, start=at(3), end=at(3, 4))
    displace(reservation, before, lost=8)
    meter_usage(until=AFTER_GRACE)
    invoices_draft(now=AFTER_GRACE)
    invoices_finalize_due(now=AFTER_GRACE)
    usage_corrections_apply(now=AFTER_GRACE)
    sla_credits_issue(now=AFTER_GRACE)
    after = incident_record(pool=pool, start=at(4), end=at(4, 1))
    late = displace(reservation, after, lost=8)
    usage_corrections_apply(now=PAID_AT)

    credits = page(admin_client, "billing_slacredit_changelist")
    corrected = page(admin_client, "billing_usagecorrection_changelist")

    assert rows(credits) == [
        {
            "period_start": "March 1, 2026, midnight",
            "reservation": str(reservation),
            "tenant_link": "Acme AI",
            "incident_link": str(before),
            "promised_gpu_hours": "800",
            "delivered_gpu_hours": "768",  # 96 %
            "credit_percent": "25.00",
            "amount": "576.00",
            "currency": "USD",
            "credit_note_link": "CN-2026-000001",
        }
    ]
    assert [row for row in rows(corrected) if row["displacement"] == str(late)] == [
        {
            "created_at": PAID_SHOWN,
            "displacement": str(late),
            "incident_link": str(after),
            "tenant_link": "Acme AI",
            "usage_removed": "0",
            "credit_note_link": "CN-2026-000002",
        }
    ]
    note = CreditNote.objects.get(number="CN-2026-000002")
    assert (note.reason, note.amount) == ("correction", Decimal("24.00"))
    link = reverse("admin:billing_creditnote_change", args=[note.pk])
    assert f'href="{link}"' in corrected.content.decode()
    assert admin_client.get(reverse("admin:billing_slacredit_add")).status_code == 403
