"""Payments recorded by operators against invoices (there is no card gateway), and prepaid
top-ups, which settle the tenant's unpaid invoices.

The ledger and the invoices agree
---------------------------------
An invoice's charge (-total) is on the ledger from its finalization, a top-up (+amount) from
the moment it is recorded. Applying a top-up to an invoice therefore moves no money on the
ledger: it records a ``Payment`` of method ``prepaid_credit`` (reference
``<top-up reference>/<invoice number>``) that lowers the invoice's ``amount_due``, and posts
nothing. A transfer (``invoice_payment_record``) and a credit note post their ``+amount`` as
they lower the amount due. So, per tenant and currency, once a top-up has been applied:

    ledger balance = prepaid credit not applied to any invoice - sum of amount_due

and a top-up that covers everything due leaves its surplus as the (positive) balance, which
the next invoices take at finalization (``prepaid_applied``)."""

import hashlib
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction

from billing import events, locks, selectors
from billing.errors import InvoiceNotFinalized, PaymentExceedsDue
from billing.models import Invoice, LedgerEntry, Payment
from billing.services import accounts
from billing.services.credit_notes import validate_amount
from core.errors import Conflict
from core.timeutils import utcnow
from marketplace import events as marketplace_events
from marketplace.models import Tenant


class PaymentReferenceReused(Conflict):
    code = "payment_reference_reused"
    default_detail = "This payment reference was already recorded for another amount."


@transaction.atomic
def invoice_payment_record(
    *,
    invoice_id: int,
    amount: Decimal,
    reference: str,
    received_at: datetime | None = None,
    recorded_by: str = "",
    now: datetime | None = None,
) -> Payment:
    """Record money received for a finalized invoice: a ``Payment`` and ``+amount`` on the
    ledger; the invoice becomes ``paid`` when nothing is due any more. Recording the same
    ``reference`` again returns the first payment (idempotent). ``now`` dates its
    ``invoice.paid`` event (default: now).

    Raises InvoiceNotFinalized (draft, paid or void), InvalidAmount, PaymentExceedsDue."""
    received_at = received_at or utcnow()
    tenant_id = Invoice.objects.filter(pk=invoice_id).values_list("tenant_id", flat=True).get()
    tenant = locks.tenant_lock(tenant_id)
    invoice = locks.invoice_lock(invoice_id)
    existing = Payment.objects.filter(tenant=tenant, reference=reference).first()
    if existing is not None:
        if (existing.invoice_id, existing.amount, existing.method) != (
            invoice.pk,
            amount,
            Payment.Method.TRANSFER,
        ):
            raise PaymentReferenceReused(extra={"reference": reference})
        return existing
    if invoice.status != Invoice.Status.FINALIZED:
        raise InvoiceNotFinalized(
            f"Payments are recorded against finalized invoices; this one is {invoice.status}.",
            extra={"status": invoice.status},
        )
    validate_amount(amount, invoice.currency)
    due = selectors.invoice_settlement(invoice=invoice).due
    if amount > due:
        raise PaymentExceedsDue(
            f"{due} {invoice.currency} is due on {invoice.number}; {amount} was recorded.",
            extra={"amount_due": str(due)},
        )
    payment = Payment.objects.create(
        invoice=invoice,
        tenant=tenant,
        amount=amount,
        currency=invoice.currency,
        reference=reference,
        method=Payment.Method.TRANSFER,
        received_at=received_at,
        recorded_by=recorded_by[:200],
    )
    accounts.payment_record(
        tenant=tenant,
        amount=amount,
        currency=invoice.currency,
        reference=reference,
        memo=f"Payment for {invoice.number}",
    )
    if amount == due:
        invoice.status = Invoice.Status.PAID
        invoice.paid_at = received_at
        invoice.save(update_fields=["status", "paid_at"])
        events.invoices_event("invoice.paid", [invoice.pk], now=now)
    return payment


REFERENCE_MAX: int = Payment._meta.get_field("reference").max_length or 200


def application_reference(top_up_reference: str, invoice_number: str) -> str:
    """The reference of a top-up's application to an invoice: ``<top-up>/<invoice number>``.
    A top-up reference too long for that is cut and tagged with a digest of the whole, so two
    top-ups never share an application reference."""
    reference = f"{top_up_reference}/{invoice_number}"
    if len(reference) <= REFERENCE_MAX:
        return reference
    digest = hashlib.sha256(top_up_reference.encode()).hexdigest()[:12]
    keep = REFERENCE_MAX - len(invoice_number) - len(digest) - 2
    return f"{top_up_reference[:keep]}~{digest}/{invoice_number}"


def top_up_apply(*, tenant: Tenant, entry: LedgerEntry, now: datetime) -> list[Payment]:
    """Apply the top-up ``entry`` (just posted, never applied before) to the tenant's unpaid
    finalized invoices in its currency, oldest due date first, up to its amount: one
    ``prepaid_credit`` payment per invoice, and no ledger posting (the top-up is already on
    the ledger). An invoice left with nothing due becomes ``paid`` (``invoice.paid``).
    Returns the payments, in the order applied.

    The caller holds the tenant's lock, which every writer of payments and credit notes takes
    first, so the amounts due read here cannot change underneath; the invoices are locked too,
    in the documented order. Raises PaymentReferenceReused when a payment was already recorded
    under one of the application references (rolling the top-up back with it)."""
    candidates = list(
        Invoice.objects.filter(
            tenant=tenant, currency=entry.currency, status=Invoice.Status.FINALIZED
        ).values_list("pk", flat=True)
    )
    if entry.amount <= 0 or not candidates:
        return []
    locks.invoices_lock(candidates)
    remaining = entry.amount
    applied: list[Payment] = []
    paid: list[int] = []
    invoice: Any  # annotated with amount_due
    for invoice in selectors.invoices_unpaid(tenant=tenant, currency=entry.currency):
        if remaining <= 0:
            break
        amount = min(invoice.amount_due, remaining)
        reference = application_reference(entry.reference, invoice.number or "")
        if Payment.objects.filter(tenant=tenant, reference=reference).exists():
            raise PaymentReferenceReused(extra={"reference": reference})
        applied.append(
            Payment.objects.create(
                invoice=invoice,
                tenant=tenant,
                amount=amount,
                currency=invoice.currency,
                reference=reference,
                method=Payment.Method.PREPAID_CREDIT,
                received_at=now,
            )
        )
        remaining -= amount
        if amount == invoice.amount_due:
            invoice.status = Invoice.Status.PAID
            invoice.paid_at = now
            invoice.save(update_fields=["status", "paid_at"])
            paid.append(invoice.pk)
    if paid:
        events.invoices_event("invoice.paid", paid, now=now)
    return applied


def top_up_create(
    *,
    tenant: Tenant,
    amount: Decimal,
    reference: str,
    memo: str = "",
    now: datetime | None = None,
) -> LedgerEntry:
    """Prepaid credit for the tenant (in its currency): ``+amount`` on the ledger, then
    applied to its unpaid finalized invoices, oldest due date first (``top_up_apply``); what
    is left stays on the balance for the next invoices. Idempotent on ``reference``: the same
    top-up again returns the first entry and applies nothing. Credit back above the tenant's
    low-balance threshold re-arms the ``balance.low`` alert."""
    now = now or utcnow()
    with transaction.atomic():
        locked = locks.tenant_lock(tenant.pk)
        entry, created = accounts.top_up_create(
            tenant=locked, amount=amount, reference=reference, memo=memo
        )
        if created:
            top_up_apply(tenant=locked, entry=entry, now=now)
        marketplace_events.balance_check(locked, now=now)
    return entry
