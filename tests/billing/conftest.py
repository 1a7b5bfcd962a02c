"""Billing fixtures: reservations are written straight to the database (billing reads them, the
booking service is not under test here), except in the race and end-to-end tests. So are
incidents and what the marketplace leaves when one displaces a reservation (``displace``)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from capacity.models import Incident
from core.money import round_money
from core.timeutils import HOUR
from marketplace.models import Displacement, Placement, Reservation, Tenant
from marketplace.services import tenants as tenant_services
from tests.factories import CapacityPoolFactory, TenantFactory

MARCH = datetime(2026, 3, 1, tzinfo=UTC)
APRIL = datetime(2026, 4, 1, tzinfo=UTC)
MAY = datetime(2026, 5, 1, tzinfo=UTC)


def at(day: int, hour: int = 0, month: int = 3, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def reserve(
    *,
    tenant: Tenant,
    pool,
    start: datetime,
    hours: int,
    gpus: int = 8,
    unit_price: str = "3.0000",
    list_price: str | None = None,
    status: str = Reservation.Status.ACTIVE,
    **fields,
) -> Reservation:
    unit = Decimal(unit_price)
    end = start + hours * HOUR
    currency = fields.pop("currency", pool.currency)
    total = round_money(unit * gpus * hours, currency)
    reservation = Reservation.objects.create(
        tenant=tenant,
        pool=pool,
        gpu_count=gpus,
        start=start,
        end=end,
        capacity_until=fields.pop("capacity_until", end),
        status=status,
        currency=currency,
        list_price_per_gpu_hour=Decimal(list_price or unit_price),
        unit_price=unit,
        total_price=total,
        charge=fields.pop("charge", total),
        **fields,
    )
    # Where its GPUs are, as booking and cancelling leave it: [start, capacity_until) on its
    # pool (nothing once a hold expired).
    if reservation.capacity_until > start:
        Placement.objects.create(
            reservation=reservation,
            pool=pool,
            start=start,
            end=reservation.capacity_until,
            gpus=gpus,
        )
    return reservation


def incident_record(
    *,
    pool,
    start: datetime,
    end: datetime | None,
    gpus: int = 8,
    kind: str = Incident.Kind.OUTAGE,
    **fields,
) -> Incident:
    return Incident.objects.create(pool=pool, kind=kind, start=start, end=end, gpus=gpus, **fields)


def displace(
    reservation: Reservation,
    incident: Incident,
    *,
    lost: int = 0,
    moved: int = 0,
    to=None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Displacement:
    """What the marketplace leaves when ``incident`` takes ``lost + moved`` GPUs of the
    reservation off the incident's pool for [start, end) (default: the incident's hours):
    the placements there cut and shrunk, ``moved`` GPUs placed on pool ``to`` (naming the
    incident), and the Displacement row."""
    start = start or incident.start
    end = end or incident.end
    taken = lost + moved
    for placement in Placement.objects.filter(
        reservation=reservation, pool=incident.pool, start__lt=end, end__gt=start
    ):
        pieces = [(placement.start, start, placement.gpus)] if placement.start < start else []
        if placement.gpus > taken:
            pieces.append(
                (max(placement.start, start), min(placement.end, end), placement.gpus - taken)
            )
        if placement.end > end:
            pieces.append((end, placement.end, placement.gpus))
        placement.delete()
        Placement.objects.bulk_create(
            Placement(
                reservation=reservation,
                pool_id=placement.pool_id,
                start=piece_start,
                end=piece_end,
                gpus=piece_gpus,
                incident_id=placement.incident_id,
            )
            for piece_start, piece_end, piece_gpus in pieces
        )
    if moved:
        Placement.objects.create(
            reservation=reservation, pool=to, start=start, end=end, gpus=moved, incident=incident
        )
    return Displacement.objects.create(
        incident=incident,
        reservation=reservation,
        start=start,
        end=end,
        gpus_taken=taken,
        gpus_moved=moved,
        gpus_lost=lost,
        created_at=incident.created_at,
    )


@pytest.fixture
def tenant(db) -> Tenant:
    return TenantFactory(name="Acme AI", slug="acme")


@pytest.fixture
def other_tenant(db) -> Tenant:
    return TenantFactory(name="Globex", slug="globex")


@pytest.fixture
def pool(db):
    return CapacityPoolFactory(slug="aws-h100", cost_per_gpu_hour=Decimal("2.0000"))


@pytest.fixture
def backup_pool(db):
    return CapacityPoolFactory(
        slug="azure-h100-backup",
        tier="backup",
        cost_per_gpu_hour=Decimal("1.5000"),
        price_per_gpu_hour=Decimal("2.2000"),
    )


def tenant_client(tenant: Tenant) -> APIClient:
    """An API client that authenticates with a real Bearer key of ``tenant``."""
    _, raw_key = tenant_services.api_key_create(tenant=tenant)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client
