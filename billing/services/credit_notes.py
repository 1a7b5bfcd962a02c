"""Credit notes: refunds, goodwill and SLA credits against an issued invoice."""

from datetime import datetime
from decimal import Decimal

from django.db import transaction

from billing import events, locks, selectors
from billing.errors import CreditExceedsInvoice, InvalidAmount, InvoiceNotFinalized
from billing.models import CreditNote, Invoice, LedgerEntry
from billing.services import accounts
from billing.services.numbering import CREDIT_NOTE_SERIES, number_issue
from core.money import round_money
from core.timeutils import utcnow


def validate_amount(amount: Decimal, currency: str) -> None:
    if amount <= 0 or round_money(amount, currency) != amount:
        raise InvalidAmount(
            f"The amount must be positive and in whole minor units of {currency}.",
            fields={"amount": [{"code": "invalid_amount", "message": "Positive, minor unit."}]},
        )


@transaction.atomic
def credit_note_create(
    *,
    invoice_id: int,
    amount: Decimal,
    reason: str,
    memo: str = "",
    issued_by: str = "",
    now: datetime | None = None,
) -> CreditNote:
    """Give back ``amount`` of a finalized (or paid) invoice: a numbered credit note
    (CN-<year>-<6 digits>, gapless) and ``+amount`` on the tenant's ledger. The invoice is
    ``paid`` once nothing is due on it any more.

    Raises InvoiceNotFinalized for a draft or void invoice, InvalidAmount, and
    CreditExceedsInvoice when the amount is more than the invoice total minus earlier credit
    notes — checked under the invoice's lock, so two concurrent notes cannot both pass."""
    now = now or utcnow()
    tenant_id = Invoice.objects.filter(pk=invoice_id).values_list("tenant_id", flat=True).get()
    tenant = locks.tenant_lock(tenant_id)
    invoice = locks.invoice_lock(invoice_id)
    if invoice.status not in (Invoice.Status.FINALIZED, Invoice.Status.PAID):
        raise InvoiceNotFinalized(
            f"A credit note needs a finalized invoice; this one is {invoice.status}.",
            extra={"status": invoice.status},
        )
    validate_amount(amount, invoice.currency)
    settlement = selectors.invoice_settlement(invoice=invoice)
    if amount > settlement.creditable:
        raise CreditExceedsInvoice(
            f"At most {settlement.creditable} {invoice.currency} of {invoice.number} can still "
            f"be credited; {amount} was asked.",
            extra={"creditable": str(settlement.creditable)},
        )
    number = number_issue(series=CREDIT_NOTE_SERIES, year=now.year)
    note = CreditNote.objects.create(
        invoice=invoice,
        tenant=tenant,
        number=number,
        amount=amount,
        currency=invoice.currency,
        reason=reason,
        memo=memo[:500],
        issued_at=now,
        issued_by=issued_by[:200],
    )
    accounts.ledger_post(
        tenant=tenant,
        kind=LedgerEntry.Kind.CREDIT_NOTE,
        amount=amount,
        currency=invoice.currency,
        reference=number,
        memo=f"Credit note {number} on {invoice.number}{f': {memo}' if memo else ''}"[:500],
    )
    events.credit_note_issued(note, now=now)
    if invoice.status == Invoice.Status.FINALIZED and settlement.due - amount <= 0:
        invoice.status = Invoice.Status.PAID
        invoice.paid_at = now
        invoice.save(update_fields=["status", "paid_at"])
        events.invoices_event("invoice.paid", [invoice.pk], now=now)
    return note
