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
    "reservation.recall_notice": "Backup GPUs of a reservation will be recalled; `data.recall` "
    "says when and how many. They are moved or taken away when the recall starts.",
    "reservation.moved": "An incident moved some of a reservation's GPU-hours to other pools "
    "at its own price; `data.moved` lists them, `data.placements` shows where it now runs.",
    "reservation.interrupted": "An incident took GPU-hours from a reservation that could not be "
    "moved; `data.lost` lists them. They are not billed; an SLA credit follows at month end.",
    "invoice.finalized": "An invoice was issued with its number.",
    "invoice.paid": "Nothing is due on an invoice any more.",
    "credit_note.issued": "A credit note gave money back on an invoice.",
    "balance.low": "The tenant's available credit fell below its low-balance threshold.",
    "tenant.suspended": "The tenant was suspended: its API keys are refused.",
}
