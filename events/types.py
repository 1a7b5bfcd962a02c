"""Every event type a tenant can receive, with what it means. Adding a type is one line here
(the API, the webhook endpoint filter and the docs read this list)."""

EVENT_TYPES: dict[str, str] = {
    "quote.created": "A quote now holds capacity for the tenant.",
    "quote.expired": "A quote's hold lapsed before it was confirmed; its capacity is released.",
    "reservation.confirmed": "A reservation is booked (directly or by confirming a quote).",
    "reservation.started": "A reservation's first hour has begun.",
    "reservation.ending_soon": "A reservation ends within the tenant's lead time.",
    "reservation.ended": "A reservation's last hour is over.",
    "reservation.cancelled": "A reservation was cancelled; `data` shows the fee and charge.",
    "reservation.extended": "A reservation's end moved later.",
    "invoice.finalized": "An invoice was issued with its number.",
    "invoice.paid": "Nothing is due on an invoice any more.",
    "credit_note.issued": "A credit note gave money back on an invoice.",
    "balance.low": "The tenant's available credit fell below its low-balance threshold.",
    "tenant.suspended": "The tenant was suspended: its API keys are refused.",
}
