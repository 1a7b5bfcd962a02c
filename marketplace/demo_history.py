"""Demo history, the demand side: the demo tenants and the bookings they make over about three
months. ``billing/demo.py`` plays them through the services day by day, with the incidents,
the billing runs and the webhook deliveries around them.

Deterministic: the plan depends only on the day the history ends (a fixed seed draws the
lengths and gaps), so a fresh database seeded on the same day gets the same rows."""

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from capacity import demo as catalogue
from marketplace.models import Tenant
from marketplace.services.tenants import tenant_create

DEMO_SEED = 20260801
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class DemoTenant:
    slug: str
    name: str
    currency: str
    credit_limit: str
    discount_percent: str
    tax_rate_percent: str
    payment_terms_days: int
    low_balance_threshold: str | None = None


TENANTS = [
    DemoTenant("orbital-robotics", "Orbital Robotics", "USD", "4000000.00", "8.00", "0.00", 30),
    DemoTenant("helix-bio", "Helix Bio", "USD", "3000000.00", "0.00", "8.25", 30),
    # pays in 14 days, and leaves one invoice unpaid: the overdue one
    DemoTenant("kestrel-ai", "Kestrel AI", "USD", "3000000.00", "5.00", "0.00", 14),
    # prepaid: its top-ups pay its invoices
    DemoTenant(
        "nordlicht-labs", "Nordlicht Labs", "EUR", "1000000.00", "0.00", "19.00", 30, "50000.00"
    ),
    DemoTenant("atelier-vision", "Atelier Vision", "EUR", "1000000.00", "3.00", "20.00", 30),
]
# The history exists when this tenant does (``seed_demo`` creates it only then).
MARKER_SLUG = TENANTS[0].slug

# Each tenant keeps GPUs on these pools, booking one reservation after the other: every pool,
# so every provider and GPU model, is booked. EUR tenants book pools priced in euros.
LANES = [
    # tenant, pool, GPUs
    ("orbital-robotics", "aws-use1-h100-a", 32),
    ("orbital-robotics", "cw-use04-h100-a", 64),
    ("orbital-robotics", "cw-use04-gb200-a", 36),
    ("orbital-robotics", "abl-gb200-a", 72),
    ("orbital-robotics", "oci-ash1-gb300-a", 16),
    ("orbital-robotics", "abl-h100-b", 32),
    ("orbital-robotics", "gcp-usc1-gb200-b", 16),
    ("helix-bio", "aws-use1-h200-a", 32),
    ("helix-bio", "cw-use04-h200-a", 48),
    ("helix-bio", "gcp-usc1-h100-a", 32),
    ("helix-bio", "oci-ash1-mi300x-a", 32),
    ("helix-bio", "azure-eus2-h100-b", 16),
    ("helix-bio", "abl-gb300-a", 36),
    ("kestrel-ai", "azure-eus2-gb200-a", 24),
    ("kestrel-ai", "oci-tyo1-h100-b", 16),
    ("kestrel-ai", "cw-eun01-mi300x-b", 16),
    ("kestrel-ai", "abl-gb300-b", 16),
    ("kestrel-ai", "aws-euw1-h100-b", 16),
    ("nordlicht-labs", "gcp-euw4-h100-a", 32),
    ("nordlicht-labs", "azure-sec-h200-a", 16),
    ("atelier-vision", "gcp-euw4-h200-a", 16),
]
LENGTH_DAYS = (3, 4, 6, 8)
GAP_HOURS = (108, 156, 204, 252)
LEAD_HOURS = (6, 18, 30, 54, 78)
FUTURE_DAYS = 30  # bookings reach this far past the end of the history


@dataclass(frozen=True)
class PlannedBooking:
    """A booking the tenant makes at ``created`` for [start, end). ``pool`` pins it to one
    pool; otherwise the booking service picks the cheapest pool of the GPU model in ``tier``
    (so an incident may move it)."""

    key: str
    tenant: str
    created: datetime
    gpu_model: str
    gpus: int
    start: datetime
    end: datetime
    pool: str | None = None
    tier: str | None = None
    via_quote: bool = False


def gpu_model_of(pool_slug: str) -> str:
    return next(row[3] for row in catalogue.POOLS if row[0] == pool_slug)


def tenants_create() -> dict[str, Tenant]:
    """The demo tenants, by slug (``tenant_create``: no API keys, they only have history)."""
    return {
        spec.slug: tenant_create(
            name=spec.name,
            slug=spec.slug,
            currency=spec.currency,
            credit_limit=Decimal(spec.credit_limit),
            discount_percent=Decimal(spec.discount_percent),
            tax_rate_percent=Decimal(spec.tax_rate_percent),
            payment_terms_days=spec.payment_terms_days,
            low_balance_threshold=(
                Decimal(spec.low_balance_threshold) if spec.low_balance_threshold else None
            ),
        )
        for spec in TENANTS
    }


def booking_plan(*, start: datetime, cutoff: datetime) -> list[PlannedBooking]:
    """The lanes' bookings from ``start`` (midnight) until FUTURE_DAYS after ``cutoff`` (the
    end of the history, midnight): each booked some hours ahead, and never later than the
    cutoff (bookings of the weeks ahead were made before it). Ordered by ``created``."""
    rng = random.Random(DEMO_SEED)
    horizon = cutoff + FUTURE_DAYS * DAY
    plan = []
    for lane, (tenant, pool, gpus) in enumerate(LANES):
        begin = start + DAY + rng.choice((0, 6, 18, 30, 42)) * HOUR
        number = 0
        while True:
            end = begin + rng.choice(LENGTH_DAYS) * DAY
            if end > horizon:
                break
            created = min(begin - rng.choice(LEAD_HOURS) * HOUR, cutoff - (lane % 12 + 1) * HOUR)
            if created >= start:
                plan.append(
                    PlannedBooking(
                        key=f"{pool}/{tenant}/{number}",
                        tenant=tenant,
                        created=created,
                        gpu_model=gpu_model_of(pool),
                        gpus=gpus,
                        start=begin,
                        end=end,
                        pool=pool,
                        via_quote=number % 3 == 1,
                    )
                )
            number += 1
            begin = end + rng.choice(GAP_HOURS) * HOUR
    return sorted(plan, key=lambda booking: (booking.created, booking.key))
