"""What billing tells tenants: invoice and credit-note events, recorded in the transaction that
issues or settles the document, with ``data`` as the API shows it."""

from collections.abc import Iterable
from datetime import datetime

from billing.models import CreditNote, Invoice
from billing.selectors import with_settlement
from events.services import NewEvent, events_record


def invoices_event(type_: str, invoice_ids: Iterable[int], *, now: datetime | None = None) -> None:
    from billing.api.serializers import InvoiceSerializer  # the API's own shape

    invoices = list(
        with_settlement(Invoice.objects.filter(pk__in=list(invoice_ids)), now=now).order_by("pk")
    )
    # One serializer for the list: its fields are built once, not once per invoice.
    data = InvoiceSerializer(invoices, many=True).data
    events_record(
        events=[
            NewEvent(invoice.tenant_id, type_, dict(shown))
            for invoice, shown in zip(invoices, data, strict=True)
        ],
        now=now,
    )


def credit_note_issued(note: CreditNote, *, now: datetime | None = None) -> None:
    from billing.api.serializers import CreditNoteSerializer

    data = {
        **CreditNoteSerializer(note).data,
        "currency": note.currency,
        "invoice": note.invoice_id,
        "invoice_number": note.invoice.number,
    }
    events_record(events=[NewEvent(note.tenant_id, "credit_note.issued", data)], now=now)
