"""Helpers for the API tests: a client that authenticates as a tenant, and short requests."""

from collections.abc import Iterable
from datetime import datetime

from rest_framework.test import APIClient

from core.api.permissions import SCOPES
from marketplace.models import Tenant
from marketplace.services.tenants import api_key_create


def tenant_client(
    tenant: Tenant, scopes: Iterable[str] = SCOPES, expires_at: datetime | None = None
) -> APIClient:
    """An API client sending a fresh API key of ``tenant`` (every scope unless ``scopes`` says
    otherwise); the key is ``client.api_key``."""
    key, raw_key = api_key_create(tenant=tenant, scopes=scopes, expires_at=expires_at)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    client.api_key = key
    client.raw_key = raw_key
    return client
