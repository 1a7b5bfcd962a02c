"""Payments recorded by operators against invoices (there is no card gateway), and prepaid
top-ups."""

from datetime import datetime
from decimal import Decimal

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
) -> Payment:
    """Record money received for a finalized invoice: a ``Payment`` and ``+amount`` on the
    ledger; the invoice becomes ``paid`` when nothing is due any more. Recording the same
    ``reference`` again returns the first payment (idempotent).

    Raises InvoiceNotFinalized (draft, paid or void), InvalidAmount, PaymentExceedsDue."""
    received_at = received_at or utcnow()
    tenant_id = Invoice.objects.filter(pk=invoice_id).values_list("tenant_id", flat=True).get()
    tenant = locks.tenant_lock(tenant_id)
    invoice = locks.invoice_lock(invoice_id)
    existing = Payment.objects.filter(tenant=tenant, reference=reference).first()
    if existing is not None:
        if existing.invoice_id != invoice.pk or existing.amount != amount:
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
        events.invoices_event("invoice.paid", [invoice.pk])
    return payment


def top_up_create(
    *, tenant: Tenant, amount: Decimal, reference: str, memo: str = ""
) -> LedgerEntry:
    """Prepaid credit for the tenant (in its currency). Idempotent on ``reference``. Credit
    back above the tenant's low-balance threshold re-arms the ``balance.low`` alert."""
    with transaction.atomic():
        locked = locks.tenant_lock(tenant.pk)
        entry, _ = accounts.top_up_create(
            tenant=locked, amount=amount, reference=reference, memo=memo
        )
        marketplace_events.balance_check(locked)
    return entry
