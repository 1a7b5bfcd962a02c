"""Tenant API keys: ``Authorization: Bearer <key>``.

The key is looked up by its SHA-256 digest (only the digest is stored) on every request, with
no cache, so a revocation takes effect at once. An unknown, revoked or expired key is a 401
``invalid_api_key``; a suspended tenant's key is a 403 ``tenant_suspended``. What the key may
do (its scopes) is checked by ``core.api.permissions.HasScope``.
``request.user`` becomes a ``TenantPrincipal`` and ``request.auth`` the ``ApiKey``."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from core.api.permissions import IsTenant  # noqa: F401 - re-exported for the views
from core.timeutils import utcnow
from marketplace.models import ApiKey, Tenant
from marketplace.selectors import api_key_by_digest
from marketplace.services.tenants import api_key_digest, api_key_touch

# Our keys are ~60 characters; anything far longer is not one of ours and is not hashed.
MAX_KEY_LENGTH = 256


class TenantPrincipal:
    """``request.user`` for a request made with a tenant API key (not a Django user)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key
        self.tenant: Tenant = api_key.tenant
        self.tenant_id: int = api_key.tenant_id

    @property
    def username(self) -> str:
        return f"api-key:{self.api_key.prefix}"

    def get_username(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False

    def __str__(self) -> str:
        return self.username


class InvalidApiKey(exceptions.AuthenticationFailed):
    default_detail = "Invalid API key."
    default_code = "invalid_api_key"


class TenantSuspendedDenied(exceptions.PermissionDenied):
    default_detail = "The tenant is suspended."
    default_code = "tenant_suspended"


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request) -> tuple[TenantPrincipal, ApiKey] | None:
        try:
            parts = get_authorization_header(request).split()
        except UnicodeError:  # only the test client passes headers that are not Latin-1
            raise InvalidApiKey() from None
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None  # not ours: let the next authentication class try
        if len(parts) != 2:
            raise InvalidApiKey("Send exactly one API key: `Authorization: Bearer <key>`.")
        if len(parts[1]) > MAX_KEY_LENGTH:
            raise InvalidApiKey()
        try:
            raw_key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise InvalidApiKey() from None
        key = api_key_by_digest(api_key_digest(raw_key))
        if key is None:
            raise InvalidApiKey()
        if key.is_revoked:
            raise InvalidApiKey("This API key has been revoked.")
        if key.is_expired(utcnow()):
            raise InvalidApiKey("This API key has expired.")
        if not key.tenant.is_active:
            raise TenantSuspendedDenied()
        api_key_touch(key=key)
        return TenantPrincipal(key), key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) with a challenge when credentials are missing or bad.
        return f'{self.keyword} realm="api"'


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = ApiKeyAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        definition = build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix="Bearer"
        )
        definition["description"] = (
            "A tenant API key (`gpum_<prefix>_<secret>`), from `manage.py create_tenant` or "
            "the admin."
        )
        return definition
