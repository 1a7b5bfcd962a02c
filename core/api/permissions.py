"""Who may call tenant endpoints. Any app's API uses these; the principal itself (an API key's
tenant) is defined by marketplace's authentication, which sets ``request.user.tenant_id``."""

from rest_framework.permissions import BasePermission
from rest_framework.request import Request


class IsTenant(BasePermission):
    """The caller authenticated as a tenant (an API key). Operator sessions have no tenant."""

    message = "This endpoint needs a tenant API key: `Authorization: Bearer <key>`."
    code = "tenant_required"

    def has_permission(self, request: Request, view: object) -> bool:
        return getattr(request.user, "tenant_id", None) is not None


def request_tenant_id(request: Request) -> int:
    """The id of the tenant making the request (after ``IsTenant``)."""
    return request.user.tenant_id
