from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from capacity.models import CapacityPool, MaintenanceWindow, PoolHour
from tests.admin_helpers import form_values, headings, options, rows
from tests.factories import CapacityPoolFactory, GpuModelFactory, ProviderFactory, RegionFactory

pytestmark = pytest.mark.django_db

HOUR_9 = datetime(2026, 12, 7, 9, tzinfo=UTC)
# The operator's clock when changing capacity: capacity changes apply from the hour in
# progress on, so the booked 09:00 hour must still be ahead.
NOW = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)


@pytest.fixture
def admin_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def catalogue() -> CapacityPool:
    """One of everything: a provider with a region, a GPU model, a 32-GPU pool holding 8 back,
    an outage on it, and a ledger hour with 10 of 16 GPUs booked."""
    aws = ProviderFactory(name="Amazon Web Services", slug="aws", kind="hyperscaler")
    region = RegionFactory(provider=aws, code="us-east-1", name="N. Virginia", country="US")
    gpu = GpuModelFactory(architecture="Hopper")
    pool = CapacityPoolFactory(
        slug="aws-h100",
        name="AWS H100 us-east-1",
        region=region,
        gpu_model=gpu,
        gpus_per_node=8,
        node_count=4,
        reserved_gpus=8,
        external_id="cap-123",
    )
    MaintenanceWindow.objects.create(
        pool=pool,
        kind="outage",
        start=HOUR_9,
        end=HOUR_9 + timedelta(hours=2),
        gpus=8,
        reason="PDU failure",
    )
    PoolHour.objects.create(pool=pool, hour=HOUR_9, capacity=16, booked=10)
    return pool


@pytest.mark.parametrize(
    ("model", "title", "shown"),
    [
        (
            "provider",
            "Select provider to change",
            {
                "name": "Amazon Web Services",
                "slug": "aws",
                "kind": "Hyperscaler",
                "region_count": "1",
            },
        ),
        (
            "region",
            "Select region to change",
            {
                "code": "us-east-1",
                "name": "N. Virginia",
                "provider": "Amazon Web Services",
                "country": "US",
            },
        ),
        (
            "gpumodel",
            "Select GPU model to change",
            {
                "name": "H100-SXM-80GB",
                "slug": "h100-sxm-80gb",
                "vendor": "NVIDIA",
                "memory_gb": "80",
                "interconnect": "NVLink 4",
                "architecture": "Hopper",
            },
        ),
        (
            "capacitypool",
            "Select capacity pool to change",
            {
                "slug": "aws-h100",
                "gpu_model": "H100-SXM-80GB",
                "region": "aws/us-east-1",
                "tier": "Primary",
                "status": "Active",
                "node_count": "4",
                "gpus_per_node": "8",
                "total_gpus": "32",
                "reserved_gpus": "8",
                "price_per_gpu_hour": "3.0000",
                "cost_per_gpu_hour": "2.0000",
                "currency": "USD",
                "available_until": "Jan. 1, 2028, midnight",
            },
        ),
        (
            "maintenancewindow",
            "Select maintenance window to change",
            {
                "pool": "aws-h100",
                "kind": "Outage",
                "start": "Dec. 7, 2026, 9 a.m.",
                "end": "Dec. 7, 2026, 11 a.m.",
                "gpus": "8",
                "reason": "PDU failure",
            },
        ),
        (
            "poolhour",
            "Select pool hour to view",
            {
                "pool": "aws-h100",
                "hour": "Dec. 7, 2026, 9 a.m.",
                "capacity": "16",
                "booked": "10",
                "free": "6",
            },
        ),
    ],
)
def test_each_operator_list_shows_the_catalogue(admin_client, catalogue, model, title, shown):
    response = admin_client.get(f"/admin/capacity/{model}/")
    assert headings(response)["h1"] == title
    assert rows(response) == [shown]


def test_the_pool_page_shows_the_pool_its_derived_size_and_its_outages(admin_client, catalogue):
    response = admin_client.get(f"/admin/capacity/capacitypool/{catalogue.pk}/change/")

    assert headings(response) == {
        "title": "aws-h100 | Change capacity pool | GPU Marketplace",
        "h1": "Change capacity pool",
        "h2": "aws-h100",
    }
    values = form_values(response)
    assert {name: values[name] for name in _pool_form(catalogue) if name in values} == {
        "slug": "aws-h100",
        "name": "AWS H100 us-east-1",
        "region": "aws/us-east-1",
        "gpu_model": "H100-SXM-80GB",
        "tier": "Primary",
        "status": "Active",
        "external_id": "cap-123",
        "gpus_per_node": "8",
        "node_count": "4",
        "reserved_gpus": "8",
        "allow_partial_nodes": "",
        "available_from_0": "2026-01-01",
        "available_from_1": "00:00:00",
        "available_until_0": "2028-01-01",
        "available_until_1": "00:00:00",
        "currency": "USD",
        "cost_per_gpu_hour": "2.0000",
        "price_per_gpu_hour": "3.0000",
    }
    assert values["total_gpus"] == "32"  # read-only, derived by the database
    assert rows(response, within="maintenance-group") == [
        {
            "kind": "Outage",
            "start": "Dec. 7, 2026, 9 a.m.",
            "end": "Dec. 7, 2026, 11 a.m.",
            "gpus": "8",
            "reason": "PDU failure",
        }
    ]


def test_a_maintenance_window_page_shows_it_read_only_but_its_reason(admin_client, catalogue):
    window = MaintenanceWindow.objects.get()

    response = admin_client.get(f"/admin/capacity/maintenancewindow/{window.pk}/change/")

    assert headings(response)["h2"] == "aws-h100 2026-12-07 09:00–2026-12-07 11:00 (8)"
    assert form_values(response) == {
        "pool": "aws-h100",
        "kind": "Outage",
        "start": "Dec. 7, 2026, 9 a.m.",
        "end": "Dec. 7, 2026, 11 a.m.",
        "gpus": "8",
        "reason": "PDU failure",  # the one editable field
    }


def test_the_maintenance_form_offers_the_pools(admin_client, catalogue):
    response = admin_client.get("/admin/capacity/maintenancewindow/add/")

    assert headings(response)["h1"] == "Add maintenance window"
    assert options(response, "pool") == ["---------", "aws-h100"]
    assert options(response, "kind") == ["Planned maintenance", "Outage"]
    values = form_values(response)
    assert (values["pool"], values["kind"], values["gpus"]) == (
        "---------",
        "Planned maintenance",
        "",
    )


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
    with time_machine.travel(NOW, tick=False):
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
    with time_machine.travel(NOW, tick=False):
        response = admin_client.post(
            f"/admin/capacity/capacitypool/{pool.pk}/change/", _pool_form(pool, node_count=6)
        )
    assert response.status_code == 302
    assert PoolHour.objects.get(pool=pool).capacity == 48


def test_a_maintenance_window_that_would_strand_bookings_is_refused(admin_client):
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    PoolHour.objects.create(pool=pool, hour=HOUR_9, capacity=32, booked=24)
    with time_machine.travel(NOW, tick=False):
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
    with time_machine.travel(NOW, tick=False):
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
