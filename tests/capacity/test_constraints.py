"""The database itself refuses rows that break the catalogue's invariants (no form involved)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db.models import F

from capacity.models import CapacityPool, Incident, PoolCostRate, PoolHour, Region
from core.timeutils import HOUR
from tests.db_helpers import raises_constraint
from tests.factories import CapacityPoolFactory, ProviderFactory, RegionFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "constraint"),
    [
        ({"gpus_per_node": 0}, "pool_gpus_per_node_positive"),
        ({"node_count": 0}, "pool_node_count_positive"),
        ({"reserved_gpus": 33}, "pool_reserved_within_total"),  # 8 x 4 = 32 GPUs in the pool
        ({"available_until": datetime(2025, 1, 1, tzinfo=UTC)}, "pool_window_ordered"),
        ({"cost_per_gpu_hour": Decimal("-0.01")}, "pool_cost_nonnegative"),
        ({"tier": "gold"}, "pool_tier_valid"),
        ({"status": "paused"}, "pool_status_valid"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else value,
)
def test_the_database_rejects_an_invalid_pool(changes, constraint):
    pool = CapacityPoolFactory()
    with raises_constraint(constraint):
        CapacityPool.objects.filter(pk=pool.pk).update(**changes)
    assert not CapacityPool.objects.filter(pk=pool.pk, **changes).exists()


def test_the_database_rejects_a_negative_cost_rate_and_a_second_rate_from_the_same_hour():
    pool = CapacityPoolFactory()  # its first rate is in force from the start of its contract
    with raises_constraint("cost_rate_nonnegative"):
        PoolCostRate.objects.create(
            pool=pool, effective_from=START, cost_per_gpu_hour=Decimal("-0.01")
        )
    with raises_constraint("cost_rate_unique"):
        PoolCostRate.objects.create(
            pool=pool, effective_from=pool.available_from, cost_per_gpu_hour=Decimal("1")
        )
    assert PoolCostRate.objects.filter(pool=pool).count() == 1


def test_a_valid_pool_change_is_accepted():
    pool = CapacityPoolFactory()
    CapacityPool.objects.filter(pk=pool.pk).update(reserved_gpus=32, node_count=5)
    pool.refresh_from_db()
    assert (pool.reserved_gpus, pool.node_count, pool.total_gpus) == (32, 5, 40)


def test_total_gpus_is_derived_by_the_database():
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    CapacityPool.objects.filter(pk=pool.pk).update(node_count=F("node_count") + 1)
    pool.refresh_from_db()
    assert pool.total_gpus == 40


def test_pool_slugs_are_unique():
    CapacityPoolFactory(slug="same")
    with raises_constraint("capacity_capacitypool_slug_key"):  # PostgreSQL's name for unique=True
        CapacityPoolFactory(slug="same")
    assert CapacityPool.objects.filter(slug="same").count() == 1


def test_region_codes_are_unique_per_provider_only():
    aws, gcp = ProviderFactory(slug="aws"), ProviderFactory(slug="gcp")
    RegionFactory(provider=aws, code="us-east-1")
    RegionFactory(provider=gcp, code="us-east-1")
    with raises_constraint("region_unique_code"):
        RegionFactory(provider=aws, code="us-east-1")
    assert Region.objects.filter(code="us-east-1").count() == 2


def test_region_country_must_be_iso_alpha2_upper_case():
    with raises_constraint("region_country_iso2"):
        RegionFactory(country="us")
    assert not Region.objects.filter(country="us").exists()


@pytest.mark.parametrize(
    ("changes", "constraint"),
    [
        ({"end": START - HOUR}, "incident_window_ordered"),
        ({"gpus": 0}, "incident_gpus_positive"),
        ({"kind": "fire"}, "incident_kind_valid"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else value,
)
def test_the_database_rejects_an_invalid_incident(changes, constraint):
    pool = CapacityPoolFactory()
    values = {"kind": "outage", "gpus": 8, "start": START, "end": START + HOUR} | changes
    with raises_constraint(constraint):
        Incident.objects.create(pool=pool, **values)
    assert not Incident.objects.exists()


def test_an_incident_may_be_open_ended_or_withdrawn_before_it_began():
    # an open incident has no end yet; a withdrawn one ends where it starts
    pool = CapacityPoolFactory()
    Incident.objects.create(pool=pool, kind="recall", gpus=8, start=START, end=None)
    Incident.objects.create(pool=pool, kind="maintenance", gpus=32, start=START, end=START)
    assert sorted(Incident.objects.values_list("kind", "end")) == [
        ("maintenance", START),
        ("recall", None),
    ]


def test_the_ledger_refuses_an_overbooked_hour():
    pool = CapacityPoolFactory()
    row = PoolHour.objects.create(pool=pool, hour=START, capacity=32, booked=32)
    with raises_constraint("poolhour_never_overbooked"):
        PoolHour.objects.filter(pk=row.pk).update(booked=F("booked") + 1)
    with raises_constraint("poolhour_booked_nonnegative"):
        PoolHour.objects.filter(pk=row.pk).update(booked=-1)
    with raises_constraint("poolhour_unique_hour"):
        PoolHour.objects.create(pool=pool, hour=START, capacity=32)
    assert list(PoolHour.objects.values_list("capacity", "booked", "excess")) == [(32, 32, 0)]


def test_an_hour_an_incident_overbooked_holds_its_excess_but_takes_no_more():
    # given 24 of 32 GPUs booked, then capacity cut to 16 with the 8 GPUs beyond it as excess
    pool = CapacityPoolFactory()
    row = PoolHour.objects.create(pool=pool, hour=START, capacity=32, booked=24)
    PoolHour.objects.filter(pk=row.pk).update(capacity=16, excess=8)

    # then not one GPU more may be booked, nor capacity lowered without more excess
    with raises_constraint("poolhour_never_overbooked"):
        PoolHour.objects.filter(pk=row.pk).update(booked=F("booked") + 1)
    with raises_constraint("poolhour_never_overbooked"):
        PoolHour.objects.filter(pk=row.pk).update(capacity=15)
    with raises_constraint("poolhour_never_overbooked"):
        PoolHour.objects.filter(pk=row.pk).update(excess=7)
    assert list(PoolHour.objects.values_list("capacity", "booked", "excess")) == [(16, 24, 8)]


@pytest.mark.parametrize(
    ("row", "changes"),
    [
        ((32, 24, 0), {"excess": -1}),  # never negative
        ((32, 24, 0), {"capacity": 0, "excess": 25}),  # never more than is booked
        ((0, 8, 8), {"booked": 0}),  # GPUs released pay the excess off as well
    ],
    ids=["negative", "beyond_booked", "released_without_paying_off"],
)
def test_the_excess_is_exactly_what_is_booked_beyond_capacity(row, changes):
    capacity, booked, excess = row
    pool = CapacityPoolFactory()
    PoolHour.objects.create(pool=pool, hour=START, capacity=capacity, booked=booked, excess=excess)
    with raises_constraint("poolhour_never_overbooked"):
        PoolHour.objects.filter(pool=pool).update(**changes)
    assert list(PoolHour.objects.values_list("capacity", "booked", "excess")) == [row]
