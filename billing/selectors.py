"""Reads of billing: invoices, usage and balances as a tenant sees them, and the work lists of
the billing runs."""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db.models import (
    Count,
    DecimalField,
    F,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Greatest, TruncDate

from billing.credit import credit_figures
from billing.models import Charge, CreditNote, Invoice, LedgerEntry, Payment, UsageRecord
from marketplace.models import Tenant

ZERO = Decimal("0.00")


def _sum(queryset: QuerySet, field: str) -> Decimal:
    return queryset.aggregate(total=Coalesce(Sum(field), Value(ZERO), output_field=DecimalField()))[
        "total"
    ]


def _summed(model: type, field: str = "amount") -> Coalesce:
    per_invoice = (
        model.objects.filter(invoice=OuterRef("pk"))
        .order_by()
        .values("invoice")
        .annotate(total=Sum(field))
        .values("total")
    )
    return Coalesce(Subquery(per_invoice), Value(ZERO), output_field=DecimalField())


def with_settlement(invoices: QuerySet[Invoice]) -> QuerySet[Invoice]:
    """Annotate ``amount_paid``, ``amount_credited`` and ``amount_due`` (total - prepaid
    credit applied - payments - credit notes, never negative), in SQL."""
    return invoices.annotate(
        amount_paid=_summed(Payment), amount_credited=_summed(CreditNote)
    ).annotate(
        amount_due=Greatest(
            Value(ZERO),
            F("total") - F("prepaid_applied") - F("amount_paid") - F("amount_credited"),
            output_field=DecimalField(),
        )
    )


def invoice_list(*, tenant: Tenant) -> QuerySet[Invoice]:
    return with_settlement(Invoice.objects.filter(tenant=tenant)).order_by(
        "-period_start", "currency"
    )


@dataclass(frozen=True)
class InvoiceSettlement:
    total: Decimal
    prepaid_applied: Decimal
    paid: Decimal
    credited: Decimal

    @property
    def due(self) -> Decimal:
        """What the tenant still owes on the invoice (never negative)."""
        return max(ZERO, self.total - self.prepaid_applied - self.paid - self.credited)

    @property
    def creditable(self) -> Decimal:
        """What credit notes may still give back."""
        return self.total - self.credited


def invoice_settlement(*, invoice: Invoice) -> InvoiceSettlement:
    return InvoiceSettlement(
        total=invoice.total,
        prepaid_applied=invoice.prepaid_applied,
        paid=_sum(Payment.objects.filter(invoice=invoice), "amount"),
        credited=_sum(CreditNote.objects.filter(invoice=invoice), "amount"),
    )


def ledger_balance_in(*, tenant: Tenant, currency: str) -> Decimal:
    """The tenant's ledger balance counting only entries in ``currency``."""
    return _sum(LedgerEntry.objects.filter(tenant=tenant, currency=currency), "amount")


@dataclass(frozen=True)
class Balance:
    currency: str
    ledger_balance: Decimal
    credit_limit: Decimal
    uninvoiced_commitments: Decimal
    uninvoiced_tax: Decimal
    credit_available: Decimal
    outstanding_invoices: Decimal


def balance_get(*, tenant: Tenant) -> Balance:
    """The figures the booking credit check uses (``billing.credit``), plus what finalized
    invoices still have due."""
    figures = credit_figures(tenant=tenant)
    outstanding = sum(
        with_settlement(
            Invoice.objects.filter(tenant=tenant, status=Invoice.Status.FINALIZED)
        ).values_list("amount_due", flat=True),
        ZERO,
    )
    return Balance(
        currency=tenant.currency,
        ledger_balance=figures.ledger_balance,
        credit_limit=tenant.credit_limit,
        uninvoiced_commitments=figures.uninvoiced_commitments,
        uninvoiced_tax=figures.uninvoiced_tax,
        credit_available=figures.credit_available,
        outstanding_invoices=outstanding,
    )


def usage_by_reservation_and_day(
    *, tenant: Tenant, start: datetime, end: datetime
) -> QuerySet[UsageRecord]:
    """Metered usage in [start, end), one row per reservation and UTC day: GPU-hours and the
    metered amount (four decimals; invoices round per line)."""
    return (
        UsageRecord.objects.filter(tenant=tenant, hour__gte=start, hour__lt=end)
        .annotate(day=TruncDate("hour", tzinfo=UTC))
        .values(
            "day",
            "reservation_id",
            "currency",
            "unit_price",
            "pool__slug",
            "pool__gpu_model__slug",
        )
        .annotate(hours=Count("id"), gpu_hours=Sum("gpu_hours"), amount=Sum("amount"))
        .order_by("day", "reservation_id")
    )


def unbilled_accounts() -> list[tuple[int, str]]:
    """(tenant id, currency) pairs with usage or charges no invoice has picked up yet: the
    draft run's work list."""
    pairs = set(
        UsageRecord.objects.filter(invoice__isnull=True)
        .values_list("tenant_id", "currency")
        .distinct()
        .order_by()
    )
    pairs |= set(
        Charge.objects.filter(invoice__isnull=True)
        .values_list("tenant_id", "currency")
        .distinct()
        .order_by()
    )
    return sorted(pairs)


def drafts_due(*, closed_before: datetime) -> QuerySet[Invoice]:
    """Draft invoices whose period ended at or before ``closed_before``, oldest first."""
    return Invoice.objects.filter(
        status=Invoice.Status.DRAFT, period_end__lte=closed_before
    ).order_by("period_start", "tenant_id", "currency")
