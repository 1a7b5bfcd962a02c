from datetime import UTC, datetime

import pytest

from capacity.models import CapacityPool, MaintenanceWindow, PoolHour
from tests.factories import CapacityPoolFactory

pytestmark = pytest.mark.django_db

HOUR_9 = datetime(2026, 12, 7, 9, tzinfo=UTC)


@pytest.fixture
def admin_client(client, operator):
    client.force_login(operator)
    return client


@pytest.mark.parametrize(
    "url",
    [
        "/admin/capacity/provider/",
        "/admin/capacity/region/",
        "/admin/capacity/gpumodel/",
        "/admin/capacity/capacitypool/",
        "/admin/capacity/maintenancewindow/",
        "/admin/capacity/poolhour/",
        "/admin/capacity/maintenancewindow/add/",
    ],
)
def test_operator_screens_render(admin_client, url):
    CapacityPoolFactory()
    assert admin_client.get(url).status_code == 200


def _pool_form(pool: CapacityPool, **changes) -> dict:
    data = {
        "slug": pool.slug,
        "name": pool.name,
        "region": pool.region_id,
        "gpu_model": pool.gpu_model_id,
        "tier": pool.tier,
        "status": pool.status,
        "external_id": "",
        "gpus_per_node": pool.gpus_per_node,
        "node_count": pool.node_count,
        "reserved_gpus": pool.reserved_gpus,
        "allow_partial_nodes": "",
        "available_from_0": "2026-01-01",
        "available_from_1": "00:00:00",
        "available_until_0": "2028-01-01",
        "available_until_1": "00:00:00",
        "currency": "USD",
        "cost_per_gpu_hour": "2.0000",
        "price_per_gpu_hour": "3.0000",
        "maintenance-TOTAL_FORMS": "0",
        "maintenance-INITIAL_FORMS": "0",
    }
    data.update(changes)
    return data


def test_shrinking_a_pool_below_its_bookings_is_refused_with_a_message(admin_client):
    # given 24 of 32 GPUs booked at 09:00
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    PoolHour.objects.create(pool=pool, hour=HOUR_9, capacity=32, booked=24)
    # when the operator cuts the pool to 2 nodes
    response = admin_client.post(
        f"/admin/capacity/capacitypool/{pool.pk}/change/", _pool_form(pool, node_count=2)
    )
    # then the form says why and nothing changed
    assert response.status_code == 200
    assert b"24 GPUs are booked" in response.content
    pool.refresh_from_db()
    assert pool.node_count == 4


def test_growing_a_pool_raises_the_ledger_capacity(admin_client):
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    PoolHour.objects.create(pool=pool, hour=HOUR_9, capacity=32, booked=24)
    response = admin_client.post(
        f"/admin/capacity/capacitypool/{pool.pk}/change/", _pool_form(pool, node_count=6)
    )
    assert response.status_code == 302
    assert PoolHour.objects.get(pool=pool).capacity == 48


def test_a_maintenance_window_that_would_strand_bookings_is_refused(admin_client):
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    PoolHour.objects.create(pool=pool, hour=HOUR_9, capacity=32, booked=24)
    response = admin_client.post(
        "/admin/capacity/maintenancewindow/add/",
        {
            "pool": pool.pk,
            "kind": "maintenance",
            "start_0": "2026-12-07",
            "start_1": "09:00:00",
            "end_0": "2026-12-07",
            "end_1": "10:00:00",
            "gpus": "16",
            "reason": "firmware",
        },
    )
    assert response.status_code == 200
    assert b"24 GPUs are booked" in response.content
    assert not MaintenanceWindow.objects.exists()
    assert PoolHour.objects.get(pool=pool).capacity == 32


def test_a_maintenance_window_that_fits_lowers_the_ledger_capacity(admin_client):
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    PoolHour.objects.create(pool=pool, hour=HOUR_9, capacity=32, booked=8)
    response = admin_client.post(
        "/admin/capacity/maintenancewindow/add/",
        {
            "pool": pool.pk,
            "kind": "maintenance",
            "start_0": "2026-12-07",
            "start_1": "09:00:00",
            "end_0": "2026-12-07",
            "end_1": "10:00:00",
            "gpus": "16",
            "reason": "firmware",
        },
    )
    assert response.status_code == 302
    assert PoolHour.objects.get(pool=pool).capacity == 16
