from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test.html import Element, parse_html

from capacity.models import CapacityPool, Incident, PoolHour
from tests.admin_helpers import form_values, headings, rows, text
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
    an outage on it still open, and a ledger hour with 10 of 16 GPUs booked."""
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
    Incident.objects.create(
        pool=pool, kind="outage", start=HOUR_9, end=None, gpus=8, reason="PDU failure"
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
                "cost_per_gpu_hour": "2.0000",
                "currency": "USD",
                "available_until": "Jan. 1, 2028, midnight",
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
                "excess": "0",
            },
        ),
    ],
)
def test_each_operator_list_shows_the_catalogue(admin_client, catalogue, model, title, shown):
    response = admin_client.get(f"/admin/capacity/{model}/")
    assert headings(response)["h1"] == title
    assert rows(response) == [shown]


def test_the_pool_page_shows_the_pool_its_derived_size_and_its_open_incidents(
    admin_client, catalogue
):
    # given, besides the open outage, a maintenance that is over and one withdrawn
    last_week = HOUR_9 - timedelta(days=7)
    Incident.objects.create(
        pool=catalogue,
        kind="maintenance",
        start=last_week,
        end=last_week + timedelta(hours=2),
        gpus=16,
        reason="firmware",
        closed_at=last_week,
    )
    Incident.objects.create(
        pool=catalogue, kind="maintenance", start=HOUR_9, end=HOUR_9, gpus=8, reason="withdrawn"
    )
    # and a maintenance planned for next week (coming: listed)
    next_week = HOUR_9 + timedelta(days=7)
    Incident.objects.create(
        pool=catalogue,
        kind="maintenance",
        start=next_week,
        end=next_week + timedelta(hours=4),
        gpus=8,
        reason="planned",
    )

    with time_machine.travel(NOW, tick=False):
        response = admin_client.get(f"/admin/capacity/capacitypool/{catalogue.pk}/change/")

    assert headings(response) == {
        "title": "aws-h100 | Change capacity pool | GPU Marketplace",
        "h1": "Change capacity pool",
        "h2": "aws-h100",
    }
    values = form_values(response)
    assert {name: values[name] for name in pool_form(catalogue) if name in values} == {
        "slug": "aws-h100",
        "name": "AWS H100 us-east-1",
        "region": "aws/us-east-1",
        "gpu_model": "H100-SXM-80GB",
        "tier": "Primary",
        "recall_notice_hours": "2",
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
        # the price book, editable: one list price per currency
        "prices-0-currency": "USD",
        "prices-0-price_per_gpu_hour": "3.0000",
    }
    assert values["total_gpus"] == "32"  # read-only, derived by the database
    assert inline_headings(response, "prices-group") == ["List prices (price book)"]
    # the cost history, read-only: the cost in force since the start of the contract
    assert rows(response, within="cost_rates-group") == [
        {"effective_from": "Jan. 1, 2026, midnight", "cost_per_gpu_hour": "2.0000"}
    ]
    assert inline_headings(response, "cost_rates-group") == ["Cost history"]
    assert not [name for name in values if name.startswith("cost_rates-")]
    # the open outage and the coming maintenance are listed, read-only, under their heading
    assert rows(response, within="incidents-group") == [
        {
            "kind": "Planned maintenance",
            "gpus": "8",
            "start": "Dec. 14, 2026, 9 a.m.",
            "end": "Dec. 14, 2026, 1 p.m.",
            "reason": "planned",
            "short_notice": "False",
        },
        {
            "kind": "Outage",
            "gpus": "8",
            "start": "Dec. 7, 2026, 9 a.m.",
            "end": "-",
            "reason": "PDU failure",
            "short_notice": "False",
        },
    ]
    assert inline_headings(response, "incidents-group") == ["Open and coming incidents"]
    assert not [name for name in values if name.startswith("incidents-")]  # nothing editable


def test_the_pool_page_offers_no_way_to_add_or_delete_incidents(admin_client, catalogue):
    response = admin_client.get(f"/admin/capacity/capacitypool/{catalogue.pk}/change/")

    # no empty form to add one from, no room for another, no delete box on the one shown
    page = response.content.decode()
    assert "incidents-__prefix__" not in page
    assert 'name="incidents-MAX_NUM_FORMS" value="0"' in page
    assert 'name="incidents-0-DELETE"' not in page
    # and the maintenance window screens are gone: incidents are recorded with the marketplace
    assert admin_client.get("/admin/capacity/maintenancewindow/").status_code == 404
    assert admin_client.get("/admin/capacity/maintenancewindow/add/").status_code == 404


def inline_headings(response, within: str) -> list[str]:
    """The texts of the ``h2`` headings inside the element with id ``within``."""

    def walk(element: Element, inside: bool) -> list[str]:
        inside = inside or dict(element.attributes).get("id") == within
        found = [text(element)] if inside and element.name == "h2" else []
        for child in element.children:
            if isinstance(child, Element):
                found += walk(child, inside)
        return found

    return walk(parse_html(response.content.decode()), False)


def price_rows(pool: CapacityPool) -> dict:
    """The price book inline of the pool page, posted back as shown."""
    prices = list(pool.prices.order_by("currency"))
    data = {"prices-TOTAL_FORMS": str(len(prices)), "prices-INITIAL_FORMS": str(len(prices))}
    for i, price in enumerate(prices):
        data |= {
            f"prices-{i}-id": str(price.pk),
            f"prices-{i}-pool": str(pool.pk),
            f"prices-{i}-currency": price.currency,
            f"prices-{i}-price_per_gpu_hour": str(price.price_per_gpu_hour),
        }
    return data


def pool_form(pool: CapacityPool, **changes) -> dict:
    data = {
        "slug": pool.slug,
        "name": pool.name,
        "region": pool.region_id,
        "gpu_model": pool.gpu_model_id,
        "tier": pool.tier,
        "recall_notice_hours": pool.recall_notice_hours,
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
        # the inlines as the page shows them: the price book, the cost history, the incidents
        **price_rows(pool),
        "cost_rates-TOTAL_FORMS": "0",
        "cost_rates-INITIAL_FORMS": "0",
        "incidents-TOTAL_FORMS": "0",
        "incidents-INITIAL_FORMS": "0",
    }
    data.update(changes)
    return data


def form_errors(response) -> dict[str, list[str]]:
    form = response.context["adminform"].form
    return {name: [str(error) for error in errors] for name, errors in form.errors.items()}


def test_shrinking_a_pool_below_its_bookings_is_refused_on_the_form(admin_client):
    # given 24 of 32 GPUs booked at 09:00
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    PoolHour.objects.create(pool=pool, hour=HOUR_9, capacity=32, booked=24)
    # when the operator cuts the pool to 2 nodes, and changes its list price in the same save
    form = pool_form(pool, node_count=2, **{"prices-0-price_per_gpu_hour": "9.0000"})
    with time_machine.travel(NOW, tick=False):
        response = admin_client.post(f"/admin/capacity/capacitypool/{pool.pk}/change/", form)
    # then the form is shown again with the service's refusal, on the field that was changed
    assert response.status_code == 200
    assert form_errors(response) == {
        "__all__": [
            "24 GPUs are booked at 2026-12-07T09:00Z but only 16 would remain. Record an "
            "incident to move those reservations, or cancel them first."
        ],
        "node_count": ["Booked GPUs would exceed the pool's capacity after this change."],
    }
    assert response.context["adminform"].form.errors.as_data()["node_count"][0].code == (
        "capacity_in_use"
    )
    # and nothing of that save was kept: the pool, its ledger and its price are as they were
    pool.refresh_from_db()
    assert pool.node_count == 4
    assert PoolHour.objects.get(pool=pool).capacity == 32
    assert [str(price.price_per_gpu_hour) for price in pool.prices.all()] == ["3.0000"]


def test_growing_a_pool_raises_the_ledger_capacity(admin_client):
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    PoolHour.objects.create(pool=pool, hour=HOUR_9, capacity=32, booked=24)
    with time_machine.travel(NOW, tick=False):
        response = admin_client.post(
            f"/admin/capacity/capacitypool/{pool.pk}/change/", pool_form(pool, node_count=6)
        )
    assert response.status_code == 302
    assert PoolHour.objects.get(pool=pool).capacity == 48


def test_a_pool_with_an_open_incident_is_edited_with_its_incident_rows_posted(admin_client):
    # given 8 of 32 GPUs out since 09:00 until further notice, with 16 booked at 09:00
    pool = CapacityPoolFactory(gpus_per_node=8, node_count=4)
    incident = Incident.objects.create(pool=pool, kind="outage", start=HOUR_9, gpus=8)
    PoolHour.objects.create(pool=pool, hour=HOUR_9, capacity=24, booked=16)

    # when the operator grows the pool to 6 nodes, the page posting the inline as shown
    form = pool_form(
        pool,
        node_count=6,
        **{
            "incidents-TOTAL_FORMS": "1",
            "incidents-INITIAL_FORMS": "1",
            "incidents-0-id": str(incident.pk),
            "incidents-0-pool": str(pool.pk),
        },
    )
    with time_machine.travel(NOW, tick=False):
        response = admin_client.post(f"/admin/capacity/capacitypool/{pool.pk}/change/", form)

    # then the pool grows, the incident is untouched and still counted: 48 - 8 = 40
    assert response.status_code == 302
    assert PoolHour.objects.get(pool=pool).capacity == 40
    incident.refresh_from_db()
    assert (incident.kind, incident.gpus, incident.start, incident.end) == (
        "outage",
        8,
        HOUR_9,
        None,
    )
