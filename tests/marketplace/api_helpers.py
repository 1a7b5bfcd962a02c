"""Helpers for the API tests: a client that authenticates as a tenant, and short requests."""

from rest_framework.test import APIClient

from marketplace.models import Tenant
from marketplace.services.tenants import api_key_create


def tenant_client(tenant: Tenant) -> APIClient:
    """An API client sending a fresh API key of ``tenant``; the key is ``client.api_key``."""
    key, raw_key = api_key_create(tenant=tenant)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    client.api_key = key
    client.raw_key = raw_key
    return client
