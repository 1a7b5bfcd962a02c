"""What a pool costs us over time: a new cost applies from the hour in progress on, the hours
before keep the rate they had, and metering costs every hour at the rate in force then, on the
PostgreSQL path and on the portable (SQLite) one alike."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine

from billing.models import UsageRecord
from billing.services.metering import _meter_portable, meter_usage
from capacity.models import CapacityPool, PoolCostRate
from capacity.services import pool_create, pool_update
from tests.billing.conftest import at, reserve
from tests.capacity.test_admin import pool_form
from tests.factories import CapacityPoolFactory, GpuModelFactory, RegionFactory, TenantFactory

pytestmark = pytest.mark.django_db


def rates(pool: CapacityPool) -> list[tuple]:
    return list(
        PoolCostRate.objects.filter(pool=pool)
        .order_by("effective_from")
        .values_list("effective_from", "cost_per_gpu_hour")
    )


def costs() -> list[tuple]:
    return list(
        UsageRecord.objects.order_by("hour").values_list(
            "hour", "gpus", "cost_per_gpu_hour", "provider_cost", "amount"
        )
    )


@pytest.fixture
def pool():
    # contract from 2026-01-01; costs 2.0000, in force from then (the factory, as pool_create)
    return CapacityPoolFactory(slug="aws-h100", cost_per_gpu_hour=Decimal("2.0000"))


def test_a_new_pool_costs_its_cost_from_the_start_of_its_contract():
    pool = pool_create(
        pool=CapacityPool(
            slug="new",
            region=RegionFactory(),
            gpu_model=GpuModelFactory(),
            gpus_per_node=8,
            node_count=2,
            available_from=at(1),
            available_until=at(1, month=6),
            cost_per_gpu_hour=Decimal("1.7500"),
        )
    )

    assert rates(pool) == [(at(1), Decimal("1.7500"))]


def test_a_cost_change_adds_a_rate_from_the_hour_in_progress_and_keeps_the_history(pool):
    # when the cost rises to 2.5000 at 14:20, and again to 2.6000 two days later
    pool_update(
        pool=pool, cost_per_gpu_hour=Decimal("2.5000"), now=at(2, 14) + timedelta(minutes=20)
    )
    pool_update(pool=pool, cost_per_gpu_hour=Decimal("2.6000"), now=at(4, 9))

    # then each applies from the hour in progress then; the first rate is untouched
    contract = pool.available_from
    assert rates(pool) == [
        (contract, Decimal("2.0000")),
        (at(2, 14), Decimal("2.5000")),
        (at(4, 9), Decimal("2.6000")),
    ]
    pool.refresh_from_db()
    assert pool.cost_per_gpu_hour == Decimal("2.6000")  # the rate in force now


def test_a_second_change_within_the_same_hour_replaces_the_first(pool):
    pool_update(pool=pool, cost_per_gpu_hour=Decimal("2.5000"), now=at(2, 14))
    pool_update(
        pool=pool, cost_per_gpu_hour=Decimal("2.4000"), now=at(2, 14) + timedelta(minutes=50)
    )

    assert rates(pool) == [(pool.available_from, Decimal("2.0000")), (at(2, 14), Decimal("2.4000"))]


def test_changing_something_else_adds_no_rate(pool):
    pool_update(pool=pool, name="renamed", cost_per_gpu_hour=Decimal("2.0000"), now=at(2, 14))

    assert rates(pool) == [(pool.available_from, Decimal("2.0000"))]


def test_a_pool_without_cost_history_keeps_its_old_cost_for_the_hours_before_a_change():
    # given a pool written without the services (no rate at all), costing 2.0000
    pool = CapacityPoolFactory(slug="bare")
    PoolCostRate.objects.filter(pool=pool).delete()

    pool_update(pool=pool, cost_per_gpu_hour=Decimal("3.0000"), now=at(2, 14))

    assert rates(pool) == [(pool.available_from, Decimal("2.0000")), (at(2, 14), Decimal("3.0000"))]


@pytest.mark.parametrize("path", ["postgresql", "portable"])
def test_metering_costs_each_hour_at_the_rate_in_force_then(pool, path):
    # given 8 GPUs from 10:00 to 16:00 at 3.0000, and the cost raised from 2.0000 to 2.5000
    # at 13:20 (in force from 13:00)
    tenant = TenantFactory()
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=6)
    pool_update(
        pool=pool, cost_per_gpu_hour=Decimal("2.5000"), now=at(2, 13) + timedelta(minutes=20)
    )

    # when the day is metered afterwards
    if path == "postgresql":
        meter_usage(until=at(3))
    else:
        _meter_portable(until=at(3), low=None)

    # then 10:00-12:00 cost the old rate and 13:00-15:00 the new one; the price is unchanged
    old = (Decimal("2.0000"), Decimal("16.0000"))
    new = (Decimal("2.5000"), Decimal("20.0000"))
    assert costs() == [
        (at(2, hour), 8, *(old if hour < 13 else new), Decimal("24.0000")) for hour in range(10, 16)
    ]


@pytest.mark.parametrize("path", ["postgresql", "portable"])
def test_hours_metered_later_are_not_costed_at_a_cost_changed_since(pool, path):
    # given the morning metered at 2.0000 and the cost then raised at 14:00
    tenant = TenantFactory()
    reserve(tenant=tenant, pool=pool, start=at(2, 10), hours=6)
    meter_usage(until=at(2, 12))
    pool_update(pool=pool, cost_per_gpu_hour=Decimal("9.0000"), now=at(2, 14))

    # when the rest of the day is metered (hours 12 and 13 were delivered before the change)
    if path == "postgresql":
        meter_usage(until=at(3))
    else:
        _meter_portable(until=at(3), low=None)

    # then only the hours from 14:00 cost the new rate
    assert [(hour, cost) for hour, _, cost, _, _ in costs()] == [
        (at(2, 10), Decimal("2.0000")),
        (at(2, 11), Decimal("2.0000")),
        (at(2, 12), Decimal("2.0000")),
        (at(2, 13), Decimal("2.0000")),
        (at(2, 14), Decimal("9.0000")),
        (at(2, 15), Decimal("9.0000")),
    ]


def test_a_pool_without_any_rate_is_costed_at_its_current_cost():
    # given a pool written by hand, without cost history
    pool = CapacityPoolFactory(slug="bare", cost_per_gpu_hour=Decimal("1.5000"))
    PoolCostRate.objects.filter(pool=pool).delete()
    reserve(tenant=TenantFactory(), pool=pool, start=at(2, 10), hours=2)

    meter_usage(until=at(3))
    by_postgresql = costs()
    UsageRecord.objects.all().delete()
    _meter_portable(until=at(3), low=None)

    assert by_postgresql == costs()
    assert [cost for _, _, cost, _, _ in by_postgresql] == [Decimal("1.5000")] * 2


# --- the pool page ------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, operator):
    client.force_login(operator)
    return client


def test_a_cost_changed_on_the_pool_page_is_a_new_rate_from_the_hour_in_progress(
    admin_client, pool
):
    with time_machine.travel(at(2, 14) + timedelta(minutes=5), tick=False):
        response = admin_client.post(
            f"/admin/capacity/capacitypool/{pool.pk}/change/",
            pool_form(pool, cost_per_gpu_hour="2.2500"),
        )

    assert response.status_code == 302
    assert rates(pool) == [
        (pool.available_from, Decimal("2.0000")),
        (at(2, 14), Decimal("2.2500")),
    ]


def test_a_pool_added_on_the_admin_starts_its_cost_history(admin_client):
    region, gpu = RegionFactory(), GpuModelFactory()
    data = {
        "slug": "added",
        "name": "",
        "region": region.pk,
        "gpu_model": gpu.pk,
        "tier": "primary",
        "recall_notice_hours": 2,
        "status": "active",
        "external_id": "",
        "gpus_per_node": 8,
        "node_count": 2,
        "reserved_gpus": 0,
        "available_from_0": "2026-03-01",
        "available_from_1": "00:00:00",
        "available_until_0": "2027-03-01",
        "available_until_1": "00:00:00",
        "currency": "EUR",
        "cost_per_gpu_hour": "1.9000",
        "prices-TOTAL_FORMS": "1",
        "prices-INITIAL_FORMS": "0",
        "prices-0-currency": "EUR",
        "prices-0-price_per_gpu_hour": "2.7000",
        "cost_rates-TOTAL_FORMS": "0",
        "cost_rates-INITIAL_FORMS": "0",
        "incidents-TOTAL_FORMS": "0",
        "incidents-INITIAL_FORMS": "0",
    }

    response = admin_client.post("/admin/capacity/capacitypool/add/", data)

    assert response.status_code == 302, response.content.decode()[-3000:]
    pool = CapacityPool.objects.get(slug="added")
    assert rates(pool) == [(at(1), Decimal("1.9000"))]
    assert list(pool.prices.values_list("currency", "price_per_gpu_hour")) == [
        ("EUR", Decimal("2.7000"))
    ]
