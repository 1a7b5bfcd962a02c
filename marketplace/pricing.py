"""The price book: the unit price a booking locks in.

A pool's list prices are ``PoolPrice`` rows, one per currency it is sold in (a pool may have
none in a currency: it is then not offered to tenants billed in it). A tenant is quoted only in
its own billing currency, so every price compared or charged is in that one currency.

unit price = the pool's list price in the tenant's currency
             x (1 - commitment discount for the reservation length)
             x (1 - the tenant's negotiated discount),
rounded half up to four decimals per GPU-hour. Backup pools carry their own (lower) list
price. The total is unit price x GPUs x hours, rounded half up to the currency's minor unit."""

from dataclasses import dataclass
from decimal import Decimal

from django.db import connection

from capacity.models import CapacityPool
from core.db import from_db
from core.money import round_money, round_rate
from marketplace.models import CancellationRule, CommitmentDiscount, PoolPrice, Tenant

HUNDRED = Decimal(100)


class NotPriced(LookupError):
    """The pool has no list price in the currency asked for (it is not sold in it)."""


@dataclass(frozen=True)
class BookingTerms:
    """What a booking of some length locks in besides its price: the commitment discount for
    that length, and the cancellation policy in force (``Reservation.cancellation_terms``:
    ``[{"min_notice_hours": 24, "fee_percent": "0.00"}, ...]``, largest notice first)."""

    commitment_percent: Decimal
    cancellation_terms: list[dict[str, int | str]]


def booking_terms(hours: int) -> BookingTerms:
    """The terms in force now for a booking of ``hours`` hours, in one statement."""
    discounts, rules_table = CommitmentDiscount._meta.db_table, CancellationRule._meta.db_table
    sql = (
        f"SELECT NULL, percent FROM (SELECT percent FROM {discounts} "  # noqa: S608
        "WHERE min_hours <= %s ORDER BY min_hours DESC LIMIT 1) AS commitment "
        f"UNION ALL SELECT min_notice_hours, fee_percent FROM {rules_table}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [hours])
        rows = cursor.fetchall()
    commitment = Decimal(0)
    rules = []
    for notice, percent in rows:
        if notice is None:
            commitment = from_db(CommitmentDiscount, "percent", percent)
        else:
            rules.append((int(notice), from_db(CancellationRule, "fee_percent", percent)))
    return BookingTerms(
        commitment_percent=commitment,
        cancellation_terms=[
            {"min_notice_hours": notice, "fee_percent": str(percent)}
            for notice, percent in sorted(rules, reverse=True)
        ],
    )


def commitment_percent(hours: int) -> Decimal:
    return booking_terms(hours).commitment_percent


def list_price(*, pool: CapacityPool, currency: str) -> Decimal | None:
    """The pool's list price per GPU-hour in ``currency``, or None when it is not sold in it.
    Pools from ``selectors.candidate_pools`` carry it already (``list_price`` with
    ``list_price_currency``): no query then."""
    if getattr(pool, "list_price_currency", None) == currency:
        return pool.list_price
    return (
        PoolPrice.objects.filter(pool_id=pool.pk, currency=currency)
        .values_list("price_per_gpu_hour", flat=True)
        .first()
    )


def unit_price(
    *, pool: CapacityPool, tenant: Tenant, hours: int, commitment: Decimal | None = None
) -> Decimal:
    """The price per GPU-hour ``tenant`` pays for ``hours`` on ``pool``, in the tenant's
    currency. Raises NotPriced when the pool has no list price in it."""
    price = list_price(pool=pool, currency=tenant.currency)
    if price is None:
        raise NotPriced(f"{pool.slug} has no list price in {tenant.currency}.")
    if commitment is None:
        commitment = commitment_percent(hours)
    price = price * (1 - commitment / HUNDRED) * (1 - tenant.discount_percent / HUNDRED)
    return round_rate(price)


def total_price(*, unit: Decimal, gpus: int, hours: int, currency: str) -> Decimal:
    return round_money(unit * gpus * hours, currency)
