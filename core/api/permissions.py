"""Who may call tenant endpoints. Any app's API uses these; the principal itself (an API key's
tenant) is defined by marketplace's authentication, which sets ``request.user.tenant_id`` and
``request.auth`` to the key (with its ``scopes``)."""

from collections.abc import Mapping

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from core.errors import ApplicationError

# What an API key may do. ``read``: every GET; ``book``: quotes and reservation writes;
# ``admin``: managing API keys, webhook endpoints and the tenant's settings.
SCOPE_READ = "read"
SCOPE_BOOK = "book"
SCOPE_ADMIN = "admin"
SCOPES = (SCOPE_READ, SCOPE_BOOK, SCOPE_ADMIN)


class InsufficientScope(ApplicationError):
    code = "insufficient_scope"
    status_code = 403
    default_detail = "The API key lacks the scope this request needs."


class IsTenant(BasePermission):
    """The caller authenticated as a tenant (an API key). Operator sessions have no tenant."""

    message = "This endpoint needs a tenant API key: `Authorization: Bearer <key>`."
    code = "tenant_required"

    def has_permission(self, request: Request, view: object) -> bool:
        return getattr(request.user, "tenant_id", None) is not None


def required_scope(view: object, method: str) -> str:
    """The scope a request needs: the view's ``required_scopes[method]`` when it names one,
    else ``read`` for GET, HEAD and OPTIONS and ``admin`` for any other method (fail closed)."""
    declared: Mapping[str, str] = getattr(view, "required_scopes", {})
    if method in declared:
        return declared[method]
    return SCOPE_READ if method in SAFE_METHODS else SCOPE_ADMIN


class HasScope(BasePermission):
    """The API key carries the scope the request needs (see ``required_scope``); otherwise a
    403 ``insufficient_scope`` naming it. Callers without a key (operator sessions) are not
    concerned: the other permission classes decide for them."""

    def has_permission(self, request: Request, view: object) -> bool:
        scopes = getattr(request.auth, "scopes", None)
        if scopes is None:
            return True
        needed = required_scope(view, request.method or "GET")
        if needed not in scopes:
            raise InsufficientScope(
                f"This request needs an API key with the `{needed}` scope; this key has "
                f"{', '.join(f'`{scope}`' for scope in scopes) or 'none'}.",
                extra={"required_scope": needed},
            )
        return True


# The permissions of every tenant endpoint.
TENANT_PERMISSIONS = [IsTenant, HasScope]


def request_tenant_id(request: Request) -> int:
    """The id of the tenant making the request (after ``IsTenant``)."""
    return request.user.tenant_id
