"""`manage.py create_tenant` and the demo tenant of `manage.py seed_demo`: a tenant and a key
printed once, as the last line, that works."""

import re
from decimal import Decimal
from io import StringIO

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from marketplace.models import ApiKey, Tenant
from marketplace.services.tenants import api_key_digest

pytestmark = pytest.mark.django_db


def create_tenant(*args: str) -> list[str]:
    out = StringIO()
    call_command("create_tenant", *args, stdout=out)
    return out.getvalue().splitlines()


def client_with(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def test_create_tenant_prints_the_key_last_and_the_key_works():
    # when an operator creates a tenant
    lines = create_tenant("Acme AI", "--credit-limit", "10000")
    # then the last line is the key alone, stored only as a digest
    raw_key = lines[-1]
    assert raw_key.startswith("gpum_")
    assert " " not in raw_key
    tenant = Tenant.objects.get()
    key = ApiKey.objects.get()
    assert key.digest == api_key_digest(raw_key)
    assert raw_key not in key.digest
    assert lines[0] == (
        "Created tenant Acme AI (slug acme-ai): credit limit 10000.00 USD, at most 1024 GPUs at "
        "once."
    )
    # and the key authenticates as that tenant
    response = client_with(raw_key).get("/api/v1/tenant/")
    assert response.status_code == 200
    assert (response.json()["slug"], response.json()["credit_limit"]) == ("acme-ai", "10000.00")
    assert tenant.credit_limit == Decimal("10000.00")


def test_create_tenant_takes_a_slug_and_a_gpu_quota():
    create_tenant("Beta Labs", "--slug", "beta", "--max-gpus", "64")
    tenant = Tenant.objects.get()
    assert (tenant.slug, tenant.max_gpus, tenant.credit_limit) == ("beta", 64, Decimal("0.00"))


def test_create_tenant_refuses_a_duplicate():
    create_tenant("Acme AI")
    with pytest.raises(CommandError, match=re.escape("slug 'acme-ai' already exists.")):
        create_tenant("Acme AI")
    with pytest.raises(CommandError, match=re.escape("A tenant named 'Acme AI' already exists.")):
        create_tenant("Acme AI", "--slug", "acme-2")
    assert Tenant.objects.count() == 1
    assert ApiKey.objects.count() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Acme", "--credit-limit", "lots"], "--credit-limit must be a number"),
        (["Acme", "--credit-limit", "-5"], "--credit-limit must be zero or more"),
        (["Acme", "--credit-limit", "NaN"], "--credit-limit must be zero or more"),
        (["Acme", "--credit-limit", "1.234"], "credit_limit"),
        (["Acme", "--credit-limit", "1e20"], "credit_limit"),
        (["Acme", "--max-gpus", "0"], "--max-gpus must be at least 1"),
        (["Acme", "--max-gpus", "many"], "--max-gpus must be a whole number"),
        (["Acme", "--max-gpus", "99999999999"], "max_gpus"),
        (["Acme", "--slug", "not a slug"], "slug"),
        (["   "], "The tenant needs a name."),
        (["!!!"], "A tenant needs a name with letters or digits."),
    ],
)
def test_create_tenant_refuses_bad_input_with_a_clear_error(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        create_tenant(*args)
    assert not Tenant.objects.exists()


def test_the_demo_seed_creates_demo_labs_and_prints_its_key_once():
    config = apps.get_app_config("marketplace")
    # when the demo is seeded the first time
    first = config.seed_demo()
    # then Demo Labs exists with its credit and the key works
    tenant = Tenant.objects.get(slug="demo-labs")
    assert (tenant.name, tenant.credit_limit) == ("Demo Labs", Decimal("250000.00"))
    assert first[-1].startswith("Demo tenant API key: gpum_")
    raw_key = first[-1].removeprefix("Demo tenant API key: ")
    assert client_with(raw_key).get("/api/v1/tenant/").json()["slug"] == "demo-labs"
    # when it is seeded again
    second = config.seed_demo()
    # then nothing new is created and no key is printed
    assert Tenant.objects.count() == 1
    assert ApiKey.objects.count() == 1
    assert len(second) == 1
    assert "already exists" in second[0]
    assert "create_tenant" in second[0]
    assert "gpum_" not in second[0]


def test_the_seed_demo_command_prints_the_demo_key():
    out = StringIO()
    call_command("seed_demo", "--no-history", stdout=out)
    assert "Demo tenant API key: gpum_" in out.getvalue()
