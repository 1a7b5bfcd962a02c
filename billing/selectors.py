"""Reads of billing: invoices, usage and balances as a tenant sees them, and the work lists of
the billing runs."""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db.models import (
    BooleanField,
    Case,
    Count,
    DecimalField,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest, TruncDate

from billing.credit import credit_figures
from billing.models import Charge, CreditNote, Invoice, Payment, UsageRecord
from core.timeutils import utcnow
from marketplace.models import Tenant

ZERO = Decimal("0.00")


def _sum(queryset: QuerySet, field: str) -> Decimal:
    return queryset.aggregate(total=Coalesce(Sum(field), Value(ZERO), output_field=DecimalField()))[
        "total"
    ]


def _summed(model: Any, field: str = "amount") -> Coalesce:
    per_invoice = (
        model.objects.filter(invoice=OuterRef("pk"))
        .order_by()
        .values("invoice")
        .annotate(total=Sum(field))
        .values("total")
    )
    return Coalesce(Subquery(per_invoice), Value(ZERO), output_field=DecimalField())


def overdue_q(now: datetime) -> Q:
    """Overdue at ``now``: finalized, something still due, and past its due date. Needs the
    ``amount_due`` annotation (``with_settlement``)."""
    return Q(status=Invoice.Status.FINALIZED, amount_due__gt=0, due_at__lt=now)


def with_settlement(invoices: QuerySet[Invoice], *, now: datetime | None = None) -> QuerySet[Any]:
    """Annotate ``amount_paid`` (transfers and prepaid credit applied after finalization),
    ``amount_credited``, ``amount_due`` (total - prepaid credit applied at finalization -
    payments - credit notes, never negative) and ``overdue`` (at ``now``, default the
    current time), in SQL."""
    now = now or utcnow()
    return (
        invoices.annotate(amount_paid=_summed(Payment), amount_credited=_summed(CreditNote))
        .annotate(
            amount_due=Greatest(
                Value(ZERO),
                F("total") - F("prepaid_applied") - F("amount_paid") - F("amount_credited"),
                output_field=DecimalField(),
            )
        )
        .annotate(
            overdue=Case(
                When(overdue_q(now), then=Value(True)),
                default=Value(False),
                output_field=BooleanField(),
            )
        )
    )


def invoice_list(*, tenant: Tenant) -> QuerySet[Invoice]:
    return with_settlement(Invoice.objects.filter(tenant=tenant)).order_by(
        "-period_start", "currency"
    )


def invoices_unpaid(*, tenant: Tenant, currency: str) -> QuerySet[Any]:
    """The tenant's finalized invoices in ``currency`` with something still due, in the order
    a top-up settles them: oldest due date first (the issue date for invoices issued before
    due dates existed), then issue date, then number."""
    return (
        with_settlement(
            Invoice.objects.filter(
                tenant=tenant, currency=currency, status=Invoice.Status.FINALIZED
            )
        )
        .filter(amount_due__gt=0)
        .order_by(Coalesce("due_at", "finalized_at"), "finalized_at", "number")
    )


def overdue_amount(*, tenant: Tenant, currency: str, now: datetime | None = None) -> Decimal:
    """What the tenant owes in ``currency`` on invoices past their due date at ``now``."""
    overdue = with_settlement(
        Invoice.objects.filter(tenant=tenant, currency=currency), now=now
    ).filter(overdue=True)
    return sum(overdue.values_list("amount_due", flat=True), ZERO)


def tenants_overdue(*, overdue_since: datetime) -> QuerySet[Tenant]:
    """Active tenants with an invoice still (partly) unpaid whose due date is before
    ``overdue_since``."""
    late = with_settlement(
        Invoice.objects.filter(
            status=Invoice.Status.FINALIZED, due_at__lt=overdue_since, tenant=OuterRef("pk")
        )
    ).filter(amount_due__gt=0)
    return Tenant.objects.filter(status=Tenant.Status.ACTIVE).filter(Exists(late))


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


@dataclass(frozen=True)
class Balance:
    currency: str
    ledger_balance: Decimal
    credit_limit: Decimal
    uninvoiced_commitments: Decimal
    uninvoiced_tax: Decimal
    credit_available: Decimal
    outstanding_invoices: Decimal
    overdue_invoices: Decimal


def balance_get(*, tenant: Tenant, now: datetime | None = None) -> Balance:
    """The figures the booking credit check uses (``billing.credit``), plus what finalized
    invoices in the tenant's currency still have due, and the part of it past due at
    ``now``."""
    figures = credit_figures(tenant=tenant)
    unpaid = list(
        with_settlement(
            Invoice.objects.filter(
                tenant=tenant, currency=tenant.currency, status=Invoice.Status.FINALIZED
            ),
            now=now,
        ).values_list("amount_due", "overdue")
    )
    return Balance(
        currency=tenant.currency,
        ledger_balance=figures.ledger_balance,
        credit_limit=tenant.credit_limit,
        uninvoiced_commitments=figures.uninvoiced_commitments,
        uninvoiced_tax=figures.uninvoiced_tax,
        credit_available=figures.credit_available,
        outstanding_invoices=sum((due for due, _ in unpaid), ZERO),
        overdue_invoices=sum((due for due, overdue in unpaid if overdue), ZERO),
    )


def usage_by_reservation_and_day(*, tenant: Tenant, start: datetime, end: datetime) -> Any:
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
    return [account for account, _ in unbilled_rows_by_account()]


def unbilled_rows_by_account() -> list[tuple[tuple[int, str], int]]:
    """``unbilled_accounts`` with how many usage records and charges each has to claim (what
    its draft costs to build), in account order."""
    rows: dict[tuple[int, str], int] = {}
    for model in (UsageRecord, Charge):
        for tenant_id, currency, count in (
            model.objects.filter(invoice__isnull=True)
            .values("tenant_id", "currency")
            .annotate(count=Count("pk"))
            .values_list("tenant_id", "currency", "count")
            .order_by()
        ):
            rows[tenant_id, currency] = rows.get((tenant_id, currency), 0) + count
    return sorted(rows.items())


def drafts_due(*, closed_before: datetime) -> QuerySet[Invoice]:
    """Draft invoices whose period ended at or before ``closed_before``, oldest first."""
    return Invoice.objects.filter(
        status=Invoice.Status.DRAFT, period_end__lte=closed_before
    ).order_by("period_start", "tenant_id", "currency")
