"""Money is ``Decimal``; the one rounding rule lives here.

Rule: round half up to the currency's minor unit (0.175 -> 0.18, 0.174 -> 0.17). Lines are
rounded first, then summed, so a document's total always equals the sum of its printed lines."""

from decimal import ROUND_HALF_UP, Decimal

# ISO 4217 minor units for the currencies we sell in.
MINOR_UNITS = {"USD": 2, "EUR": 2, "GBP": 2, "JPY": 0, "CHF": 2, "CAD": 2, "AUD": 2}
CURRENCY_CHOICES = [(code, code) for code in sorted(MINOR_UNITS)]

# Prices per GPU-hour carry four decimals (sub-cent rates are common in the market).
RATE_PLACES = Decimal("0.0001")


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-MINOR_UNITS[currency])


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round half up to the minor unit of ``currency``."""
    return Decimal(amount).quantize(quantum(currency), rounding=ROUND_HALF_UP)


def round_rate(rate: Decimal) -> Decimal:
    """Round a per-GPU-hour rate half up to four decimals."""
    return Decimal(rate).quantize(RATE_PLACES, rounding=ROUND_HALF_UP)
