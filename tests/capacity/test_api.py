import json
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from capacity.models import CapacityPool
from tests.factories import CapacityPoolFactory, GpuModelFactory, ProviderFactory, RegionFactory
from tests.sqlite_helpers import run_on_sqlite

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue():
    aws = ProviderFactory(slug="aws", name="AWS")
    cw = ProviderFactory(slug="coreweave", name="CoreWeave", kind="neocloud")
    use1 = RegionFactory(provider=aws, code="us-east-1", country="US")
    euw1 = RegionFactory(provider=aws, code="eu-west-1", country="IE")
    cw1 = RegionFactory(provider=cw, code="us-east-04", country="US")
    h100 = GpuModelFactory(slug="h100-sxm-80gb")
    gb200 = GpuModelFactory(slug="gb200-nvl72", memory_gb=186)
    CapacityPoolFactory(slug="a", region=use1, gpu_model=h100)
    CapacityPoolFactory(slug="b", region=euw1, gpu_model=h100, tier="backup")
    CapacityPoolFactory(slug="c", region=cw1, gpu_model=gb200, gpus_per_node=4)
    CapacityPoolFactory(slug="d", region=cw1, gpu_model=h100, status="draining")


def slugs(response) -> list[str]:
    return [row["slug"] for row in response.json()["results"]]


def test_the_catalogue_requires_authentication(api_client, catalogue):
    response = api_client.get("/api/v1/pools/")
    assert response.status_code in (401, 403)
    assert response.json()["code"] == "not_authenticated"


def test_pools_list_with_provider_region_and_model(operator_client, catalogue):
    response = operator_client.get("/api/v1/pools/")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 4
    first = body["results"][0]
    assert first["slug"] == "a"
    assert first["provider"] == "aws"
    assert first["region"] == "us-east-1"
    assert first["gpu_model"] == "h100-sxm-80gb"
    assert first["total_gpus"] == 32
    assert first["price_per_gpu_hour"] == "3.0000"
    assert "cost_per_gpu_hour" not in first


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("provider=aws", ["a", "b"]),
        ("region=us-east-04", ["c", "d"]),
        ("gpu_model=gb200-nvl72", ["c"]),
        ("tier=backup", ["b"]),
        ("status=draining", ["d"]),
        ("provider=aws&tier=primary", ["a"]),
        ("country=ie", ["b"]),
    ],
)
def test_pools_filter(operator_client, catalogue, query, expected):
    assert slugs(operator_client.get(f"/api/v1/pools/?{query}")) == expected


def test_an_invalid_filter_choice_is_a_400_with_a_code(operator_client, catalogue):
    response = operator_client.get("/api/v1/pools/?tier=gold")
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert "tier" in response.json()["fields"]


def test_pools_paginate(operator_client, catalogue):
    page1 = operator_client.get("/api/v1/pools/?page_size=3").json()
    page2 = operator_client.get("/api/v1/pools/?page_size=3&page=2").json()
    assert page1["count"] == 4
    assert len(page1["results"]) == 3
    assert page1["next"] is not None
    assert slugs_of(page1) + slugs_of(page2) == ["a", "b", "c", "d"]
    assert page2["next"] is None


def slugs_of(body: dict) -> list[str]:
    return [row["slug"] for row in body["results"]]


def test_a_page_past_the_end_is_a_404_with_a_code(operator_client, catalogue):
    response = operator_client.get("/api/v1/pools/?page=9")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_pool_detail_by_slug(operator_client, catalogue):
    response = operator_client.get("/api/v1/pools/c/")
    assert response.status_code == 200
    assert response.json()["gpus_per_node"] == 4


def test_providers_regions_and_models_list(operator_client, catalogue):
    assert [p["slug"] for p in operator_client.get("/api/v1/providers/").json()["results"]] == [
        "aws",
        "coreweave",
    ]
    regions = operator_client.get("/api/v1/regions/?provider=aws").json()["results"]
    assert sorted(r["code"] for r in regions) == ["eu-west-1", "us-east-1"]
    models = operator_client.get("/api/v1/gpu-models/").json()["results"]
    assert {m["slug"] for m in models} == {"h100-sxm-80gb", "gb200-nvl72"}


def test_the_catalogue_is_read_only(operator_client, catalogue):
    response = operator_client.post("/api/v1/pools/", {"slug": "x"}, format="json")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert CapacityPool.objects.count() == 4


def test_schema_and_docs_are_served(operator_client):
    schema = operator_client.get(reverse("schema"))
    assert schema.status_code == 200
    assert b"/api/v1/pools/" in schema.content
    docs = operator_client.get(reverse("api-docs"))
    assert docs.status_code == 200


def test_datetimes_are_utc_with_z(operator_client, catalogue):
    CapacityPool.objects.filter(slug="a").update(
        available_from=datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    )
    assert operator_client.get("/api/v1/pools/a/").json()["available_from"] == (
        "2026-03-01T00:00:00Z"
    )


SQLITE_CATALOGUE = """
    import json
    from decimal import Decimal
    import django
    django.setup()
    from django.core.management import call_command
    from django.test import Client
    call_command("migrate", verbosity=0)
    from marketplace.services.tenants import api_key_create
    from tests.factories import CapacityPoolFactory, TenantFactory

    CapacityPoolFactory(slug="odd-price", price_per_gpu_hour=Decimal("2.1"))
    CapacityPoolFactory(slug="unpriced", price_per_gpu_hour=None)
    key = api_key_create(tenant=TenantFactory(currency="USD"))[1]
    api = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {key}")
    listed = api.get("/api/v1/pools/").json()["results"]
    pages = [api.get(f"/api/v1/pools/{entry['slug']}/").json() for entry in listed]
    print(json.dumps({"listed": listed, "pages": pages}))
"""


def test_on_sqlite_a_pools_page_is_its_entry_in_the_list(tmp_path):
    # The embedded default (`make run`): the pool page's one statement reads SQLite's numbers.
    result = run_on_sqlite(SQLITE_CATALOGUE, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["pages"] == outcome["listed"]
    prices = {
        entry["slug"]: (entry["price_per_gpu_hour"], entry["currency"])
        for entry in outcome["pages"]
    }
    assert prices == {"odd-price": ("2.1000", "USD"), "unpriced": (None, "USD")}
