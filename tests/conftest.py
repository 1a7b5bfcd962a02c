import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tests.factories import (
    CapacityPoolFactory,
    GpuModelFactory,
    ProviderFactory,
    RegionFactory,
)

__all__ = ["CapacityPoolFactory", "GpuModelFactory", "ProviderFactory", "RegionFactory"]


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_user(
        username="op", password="pw", is_staff=True, is_superuser=True
    )


@pytest.fixture
def operator_client(operator) -> APIClient:
    client = APIClient()
    client.force_authenticate(operator)
    return client
