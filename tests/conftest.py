"""Fixtures shared by every test, and the Hypothesis profiles: ``ci`` (derandomized, so a
failure reproduces anywhere) unless ``HYPOTHESIS_PROFILE`` names another.

Long randomized search (up to an hour per test):
    HYPOTHESIS_PROFILE=long make test PYTEST_ARGS=tests/marketplace/test_stateful.py
"""

import os

import pytest
from django.contrib.auth import get_user_model
from hypothesis import settings
from rest_framework.test import APIClient

from tests.factories import (
    CapacityPoolFactory,
    GpuModelFactory,
    ProviderFactory,
    RegionFactory,
)

__all__ = ["CapacityPoolFactory", "GpuModelFactory", "ProviderFactory", "RegionFactory"]

settings.register_profile(
    "ci",
    derandomize=True,
    print_blob=True,
    max_examples=40,
    stateful_step_count=20,
    deadline=None,  # every example talks to PostgreSQL: its timing is not the property
    database=None,
)
settings.register_profile(
    "long",
    derandomize=False,
    print_blob=True,
    max_examples=500,  # examples get slower as the run goes on: about 7 min on an idle machine
    stateful_step_count=50,
    deadline=None,
)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or "ci"
settings.load_profile(HYPOTHESIS_PROFILE)
LONG_PROFILE_TIMEOUT = 3600  # seconds per test; the suite's default (pyproject.toml) is 300


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A long search outlasts the suite's per-test safety timeout; give it an hour instead.
    if HYPOTHESIS_PROFILE != "long":
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(LONG_PROFILE_TIMEOUT))


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
