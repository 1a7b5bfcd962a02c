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
from decimal import ROUND_FLOOR, Context, Decimal

from django.db import connection

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


# Both figures in one round trip (booking asks for credit under the tenant lock, so every one
# counts). The ledger balance: the tenant's entries in its currency. Uninvoiced: what its
# reservations in that currency, but expired holds, charge beyond what invoices took; both
# sums run over the same rows, so their difference is Σ charge − Σ invoiced.
_CREDIT_SUMS_SQL = """
SELECT
    (SELECT SUM(amount) FROM {entries} WHERE tenant_id = %(tenant)s AND currency = %(currency)s),
    (SELECT SUM(charge) - SUM(invoiced_amount) FROM {reservations}
     WHERE tenant_id = %(tenant)s AND currency = %(currency)s AND status <> %(expired)s)
"""
# SQLite sums decimals as floats; read them back as the ORM would (15 digits, then cents).
_FLOAT_SUM = Context(prec=15)
CENT = Decimal("0.01")


def _amount(value: Decimal | float | int | None) -> Decimal:
    if value is None:
        return ZERO
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return _FLOAT_SUM.create_decimal_from_float(value).quantize(CENT)
    return Decimal(value).quantize(CENT)


def _balance_and_uninvoiced(tenant: Tenant) -> tuple[Decimal, Decimal]:
    sql = _CREDIT_SUMS_SQL.format(
        entries=LedgerEntry._meta.db_table, reservations=Reservation._meta.db_table
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "tenant": tenant.pk,
                "currency": tenant.currency,
                "expired": Reservation.Status.EXPIRED.value,
            },
        )
        balance, uninvoiced = cursor.fetchone()
    return _amount(balance), _amount(uninvoiced)


def ledger_balance(*, tenant: Tenant) -> Decimal:
    """The tenant's ledger in its currency: positive is prepaid credit, negative money owed."""
    return _balance_and_uninvoiced(tenant)[0]


def uninvoiced_commitments(*, tenant: Tenant) -> Decimal:
    """What the tenant's reservations owe, before tax, that is not on an issued invoice yet."""
    return _balance_and_uninvoiced(tenant)[1]


def tax_on(amount: Decimal, *, tenant: Tenant) -> Decimal:
    """The tax an invoice will add to ``amount`` (rounded as invoices round it)."""
    return round_money(amount * tenant.tax_rate_percent / HUNDRED, tenant.currency)


def credit_figures(*, tenant: Tenant) -> CreditFigures:
    balance, uninvoiced = _balance_and_uninvoiced(tenant)
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
