"""Credit: how much more a tenant may commit. The one question the marketplace asks billing
(``credit_available``); booking, the API, the admin and the balance figures all use this
formula and no other.

In the tenant's currency only (a tenant has one billing currency):

    balance     = sum of the tenant's ledger entries
    uninvoiced  = what reservations owe that no finalized invoice has charged yet (live
                  bookings in full, delivered hours and fees of cancelled ones)
    headroom    = credit limit + balance - uninvoiced - tax on uninvoiced
    available   = headroom / (1 + tax rate), rounded down to the minor unit

``credit_available`` is therefore an amount *before tax*, comparable with a booking's price: a
booking fits when its price is at most that, i.e. when what will be invoiced for it, tax
included, fits in the headroom."""

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from django.db.models import Sum

from billing.models import LedgerEntry
from core.money import quantum, round_money
from marketplace.models import Reservation, Tenant

ZERO = Decimal("0.00")
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class CreditFigures:
    currency: str
    credit_limit: Decimal
    ledger_balance: Decimal
    uninvoiced_commitments: Decimal
    uninvoiced_tax: Decimal
    tax_rate_percent: Decimal
    credit_available: Decimal


def ledger_balance(*, tenant: Tenant) -> Decimal:
    """The tenant's ledger in its currency: positive is prepaid credit, negative money owed."""
    total = LedgerEntry.objects.filter(tenant=tenant, currency=tenant.currency).aggregate(
        total=Sum("amount")
    )["total"]
    return total or ZERO


def uninvoiced_commitments(*, tenant: Tenant) -> Decimal:
    """What the tenant's reservations owe, before tax, that is not on an issued invoice yet."""
    rows = (
        Reservation.objects.filter(tenant=tenant, currency=tenant.currency)
        .exclude(status=Reservation.Status.EXPIRED)
        .aggregate(charge=Sum("charge"), invoiced=Sum("invoiced_amount"))
    )
    return (rows["charge"] or ZERO) - (rows["invoiced"] or ZERO)


def tax_on(amount: Decimal, *, tenant: Tenant) -> Decimal:
    """The tax an invoice will add to ``amount`` (rounded as invoices round it)."""
    return round_money(amount * tenant.tax_rate_percent / HUNDRED, tenant.currency)


def credit_figures(*, tenant: Tenant) -> CreditFigures:
    balance = ledger_balance(tenant=tenant)
    uninvoiced = uninvoiced_commitments(tenant=tenant)
    tax = tax_on(uninvoiced, tenant=tenant)
    headroom = tenant.credit_limit + balance - uninvoiced - tax
    pre_tax = headroom * HUNDRED / (HUNDRED + tenant.tax_rate_percent)
    return CreditFigures(
        currency=tenant.currency,
        credit_limit=tenant.credit_limit,
        ledger_balance=balance,
        uninvoiced_commitments=uninvoiced,
        uninvoiced_tax=tax,
        tax_rate_percent=tenant.tax_rate_percent,
        credit_available=pre_tax.quantize(quantum(tenant.currency), rounding=ROUND_FLOOR),
    )


def credit_available(*, tenant: Tenant) -> Decimal:
    """How much more, before tax, the tenant may commit (negative: over its limit)."""
    return credit_figures(tenant=tenant).credit_available
