"""Billing fixtures: reservations are written straight to the database (billing reads them, the
booking service is not under test here), except in the race and end-to-end tests."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from core.money import round_money
from core.timeutils import HOUR
from marketplace.models import Reservation, Tenant
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
    return Reservation.objects.create(
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
