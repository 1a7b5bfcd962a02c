"""The database itself refuses rows that break the catalogue's invariants (no form involved)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.db.models import F

from capacity.models import CapacityPool, MaintenanceWindow, PoolHour, Region
from tests.factories import CapacityPoolFactory, ProviderFactory, RegionFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 6, 1, tzinfo=UTC)


def _rejected(**changes) -> bool:
    pool = CapacityPoolFactory()
    try:
        with transaction.atomic():
            CapacityPool.objects.filter(pk=pool.pk).update(**changes)
    except IntegrityError:
        return True
    return False


@pytest.mark.parametrize(
    "changes",
    [
        {"gpus_per_node": 0},
        {"node_count": 0},
        {"reserved_gpus": 33},  # 8 x 4 = 32 GPUs in the pool
        {"available_until": datetime(2025, 1, 1, tzinfo=UTC)},
        {"cost_per_gpu_hour": Decimal("-0.01")},
        {"price_per_gpu_hour": Decimal("-1")},
        {"tier": "gold"},
        {"status": "paused"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_the_database_rejects_an_invalid_pool(changes):
    assert _rejected(**changes)


def test_a_valid_pool_change_is_accepted():
    assert not _rejected(reserved_gpus=32, node_count=5)


def test_total_gpus_is_derived_by_the_database():
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    CapacityPool.objects.filter(pk=pool.pk).update(node_count=F("node_count") + 1)
    pool.refresh_from_db()
    assert pool.total_gpus == 40


def test_pool_slugs_are_unique():
    CapacityPoolFactory(slug="same")
    with pytest.raises(IntegrityError):
        CapacityPoolFactory(slug="same")


def test_region_codes_are_unique_per_provider_only():
    aws, gcp = ProviderFactory(slug="aws"), ProviderFactory(slug="gcp")
    RegionFactory(provider=aws, code="us-east-1")
    RegionFactory(provider=gcp, code="us-east-1")
    with pytest.raises(IntegrityError):
        RegionFactory(provider=aws, code="us-east-1")


def test_region_country_must_be_iso_alpha2_upper_case():
    with pytest.raises(IntegrityError), transaction.atomic():
        RegionFactory(country="us")
    assert not Region.objects.filter(country="us").exists()


def test_maintenance_window_must_be_ordered_and_take_gpus():
    pool = CapacityPoolFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        MaintenanceWindow.objects.create(pool=pool, start=START, end=START, gpus=8)
    with pytest.raises(IntegrityError), transaction.atomic():
        MaintenanceWindow.objects.create(
            pool=pool, start=START, end=datetime(2026, 6, 2, tzinfo=UTC), gpus=0
        )


def test_the_ledger_refuses_an_overbooked_hour():
    pool = CapacityPoolFactory()
    row = PoolHour.objects.create(pool=pool, hour=START, capacity=32, booked=32)
    with pytest.raises(IntegrityError), transaction.atomic():
        PoolHour.objects.filter(pk=row.pk).update(booked=F("booked") + 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        PoolHour.objects.filter(pk=row.pk).update(booked=-1)
    with pytest.raises(IntegrityError), transaction.atomic():
        PoolHour.objects.create(pool=pool, hour=START, capacity=32)
