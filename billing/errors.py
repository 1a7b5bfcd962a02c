"""Domain errors of billing, each with a stable ``code`` clients and operators can rely on."""

from core.errors import ApplicationError, Conflict


class DocumentImmutable(Conflict):
    code = "document_immutable"
    default_detail = "An issued invoice, credit note or payment cannot be changed."


class InvoiceNotFinalized(Conflict):
    code = "invoice_not_finalized"
    default_detail = "Only a finalized invoice can take this."


class CreditExceedsInvoice(Conflict):
    code = "credit_exceeds_invoice"
    default_detail = "The credit note exceeds what is still creditable on the invoice."


class PaymentExceedsDue(Conflict):
    code = "payment_exceeds_due"
    default_detail = "The payment exceeds the amount due on the invoice."


class PeriodNotEnded(Conflict):
    code = "period_not_ended"
    default_detail = (
        "The invoice's month has not ended, or is still in its grace period "
        "(BILLING_GRACE_DAYS after its end)."
    )


class UntilInFuture(ApplicationError):
    code = "until_in_future"
    status_code = 400
    default_detail = "Usage is metered up to now at the latest, never into the future."


class InvalidAmount(ApplicationError):
    code = "invalid_amount"
    status_code = 400
    default_detail = "The amount must be positive and in the currency's minor unit."
