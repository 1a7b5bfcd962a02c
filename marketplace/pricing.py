"""The price book: the unit price a booking locks in.

unit price = pool list price x (1 - commitment discount for the reservation length)
                             x (1 - the tenant's negotiated discount),
rounded half up to four decimals per GPU-hour. Backup pools carry their own (lower) list
price. The total is unit price x GPUs x hours, rounded half up to the currency's minor unit."""

from decimal import Decimal

from capacity.models import CapacityPool
from core.money import round_money, round_rate
from marketplace.models import CommitmentDiscount, Tenant

HUNDRED = Decimal(100)


def commitment_percent(hours: int) -> Decimal:
    rule = CommitmentDiscount.objects.filter(min_hours__lte=hours).order_by("-min_hours").first()
    return rule.percent if rule else Decimal(0)


def unit_price(
    *, pool: CapacityPool, tenant: Tenant, hours: int, commitment: Decimal | None = None
) -> Decimal:
    if commitment is None:
        commitment = commitment_percent(hours)
    price = (
        pool.price_per_gpu_hour
        * (1 - commitment / HUNDRED)
        * (1 - tenant.discount_percent / HUNDRED)
    )
    return round_rate(price)


def total_price(*, unit: Decimal, gpus: int, hours: int, currency: str) -> Decimal:
    return round_money(unit * gpus * hours, currency)
