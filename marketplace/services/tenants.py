"""Tenants and their API keys."""

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import cast

from django.db import transaction
from django.db.models import QuerySet
from django.utils.text import slugify

from core.api.permissions import SCOPE_ADMIN, SCOPES
from core.errors import InvalidInput, NotFound
from core.history import bulk_update_audited
from core.timeutils import utcnow
from marketplace import events
from marketplace.errors import CurrencyLocked, LastAdminKey
from marketplace.models import ApiKey, Tenant

KEY_PREFIX = "gpum"


def api_key_digest(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def tenant_create(*, name: str, slug: str | None = None, **fields: object) -> Tenant:
    slug = slug or slugify(name)
    if not slug:
        raise InvalidInput("A tenant needs a name with letters or digits.")
    if Tenant.objects.filter(slug=slug).exists():
        raise InvalidInput(
            f"A tenant with the slug {slug!r} already exists.",
            fields={"slug": [{"code": "unique", "message": "Already taken."}]},
        )
    if Tenant.objects.filter(name=name).exists():
        raise InvalidInput(
            f"A tenant named {name!r} already exists.",
            fields={"name": [{"code": "unique", "message": "Already taken."}]},
        )
    tenant = Tenant(name=name, slug=slug, **fields)
    tenant.full_clean()
    tenant.save()
    return tenant


# What fixes a tenant's billing currency: money recorded in it. Read through the tenant's
# reverse relations (billing's ``LedgerEntry.tenant`` and ``Invoice.tenant`` declare
# ``ledger_entries`` and ``invoices``), so the marketplace imports nothing of billing here.
HISTORY_RELATIONS = ("reservations", "ledger_entries", "invoices")


def tenant_has_history(tenant: Tenant) -> bool:
    """Whether the tenant has reservations (quotes included), ledger entries or invoices."""
    if tenant.pk is None:
        return False
    return any(
        getattr(tenant, name).exists() for name in HISTORY_RELATIONS if hasattr(tenant, name)
    )


def tenant_currency_check(*, tenant: Tenant, currency: str) -> None:
    """Raise CurrencyLocked when ``tenant`` may not change to ``currency``: its currency is
    fixed once it has history (its prices, balance and invoices are in that currency).
    Choosing the currency it already has is always fine."""
    if currency == tenant.currency or not tenant_has_history(tenant):
        return
    raise CurrencyLocked(
        f"{tenant.name} is billed in {tenant.currency} and already has reservations, ledger "
        f"entries or invoices in it: its currency cannot change to {currency}. Create a new "
        f"tenant to be billed in {currency}.",
        fields={
            "currency": [
                {
                    "code": "currency_locked",
                    "message": f"Fixed at {tenant.currency}: the tenant has history.",
                }
            ]
        },
        extra={"currency": tenant.currency},
    )


@transaction.atomic
def tenant_update(*, tenant: Tenant, **changes: object) -> Tenant:
    """The operator's edit of a tenant's fields. The billing currency is fixed once the tenant
    has history: changing it then raises CurrencyLocked (409) and changes nothing. Runs under
    the tenant row lock, which a booking takes too, so no reservation can slip in between
    the check and the change."""
    locked = Tenant.objects.select_for_update(of=("self",)).get(pk=tenant.pk)
    if "currency" in changes:
        tenant_currency_check(tenant=locked, currency=str(changes["currency"]))
    for field, value in changes.items():
        setattr(locked, field, value)
    locked.full_clean()
    locked.save()
    return locked


def api_key_scopes_check(scopes: Iterable[str]) -> list[str]:
    """The scopes, deduplicated in their canonical order; InvalidInput if any is unknown or
    there are none."""
    scopes = list(scopes)
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        message = f"Unknown scopes: {', '.join(unknown)}." if unknown else "Give a scope."
        raise InvalidInput(
            f"{message} Scopes are {', '.join(SCOPES)}.",
            fields={
                "scopes": [{"code": "invalid_choice" if unknown else "empty", "message": message}]
            },
        )
    return [scope for scope in SCOPES if scope in scopes]


@transaction.atomic
def api_key_create(
    *,
    tenant: Tenant,
    name: str = "default",
    scopes: Iterable[str] = SCOPES,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with the raw secret, which is never stored nor shown again.

    The raw key reads ``gpum_<prefix>_<secret>``; the prefix identifies it in lists and logs.
    Without ``scopes`` the key may do everything (operators' keys and a tenant's first key);
    ``expires_at``, when given, must be in the future."""
    checked = api_key_scopes_check(scopes)
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput(
            "expires_at must be in the future.",
            fields={"expires_at": [{"code": "in_past", "message": "Must be in the future."}]},
        )
    prefix = secrets.token_hex(6)
    raw_key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        prefix=prefix,
        digest=api_key_digest(raw_key),
        scopes=checked,
        expires_at=expires_at,
    )
    return key, raw_key


def api_key_list(*, tenant_id: int) -> QuerySet[ApiKey]:
    """The tenant's keys, revoked and expired ones included, newest first."""
    return ApiKey.objects.filter(tenant_id=tenant_id).order_by("-created_at", "-pk")


def _is_active_admin(key: ApiKey, now: datetime) -> bool:
    return not key.is_revoked and not key.is_expired(now) and SCOPE_ADMIN in key.scopes


@transaction.atomic
def api_key_revoke(*, tenant: Tenant, key_id: int | str) -> ApiKey:
    """The tenant revokes one of its keys: it stops working at once. Revoking a key already
    revoked returns it unchanged; another tenant's key is NotFound. The tenant's last active
    key with the ``admin`` scope cannot be revoked (LastAdminKey), or nobody could manage
    its keys any more. Runs under the tenant row lock, so two concurrent revokes cannot each
    see the other's key as the one left."""
    Tenant.objects.select_for_update(of=("self",)).get(pk=tenant.pk)
    try:
        key = ApiKey.objects.get(tenant_id=tenant.pk, pk=int(key_id))
    except (ApiKey.DoesNotExist, ValueError, TypeError):
        raise NotFound("No such API key.") from None
    if key.is_revoked:
        return key
    now = utcnow()
    if _is_active_admin(key, now):
        others = ApiKey.objects.filter(tenant_id=tenant.pk, revoked_at__isnull=True).exclude(
            pk=key.pk
        )
        if not any(_is_active_admin(other, now) for other in others):
            raise LastAdminKey(
                f"{key.prefix} is the tenant's last active API key with the admin scope: "
                "create another admin key before revoking it."
            )
    key.revoked_at = now
    key.save(update_fields=["revoked_at"])
    return key


@transaction.atomic
def api_key_operator_revoke(*, key: ApiKey) -> ApiKey:
    """An operator revokes a key (say, a leaked one): always allowed, even the tenant's last
    admin key; an operator can give the tenant a new one. Revoking a key already revoked
    changes nothing."""
    locked = ApiKey.objects.select_for_update().get(pk=key.pk)
    if locked.revoked_at is None:
        locked.revoked_at = utcnow()
        locked.save(update_fields=["revoked_at"])  # save(), not update(): the audit trail
    key.refresh_from_db()
    return key


def api_key_touch(*, key: ApiKey) -> None:
    """Record use, at most once a minute per key so hot keys do not write on every request."""
    now = utcnow()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() >= 60:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now


@transaction.atomic
def tenant_settings_update(
    *,
    tenant: Tenant,
    ending_soon_lead: timedelta | None = None,
    **changes: object,
) -> Tenant:
    """The tenant's own notification settings: ``ending_soon_lead`` and
    ``low_balance_threshold`` (None turns the alert off). A new threshold is checked at once."""
    locked = Tenant.objects.select_for_update(of=("self",)).get(pk=tenant.pk)
    if ending_soon_lead is not None:
        locked.ending_soon_lead = ending_soon_lead
    if "low_balance_threshold" in changes:
        locked.low_balance_threshold = cast(Decimal | None, changes.pop("low_balance_threshold"))
        locked.low_balance_alerted = False
    if changes:
        raise InvalidInput(f"Unknown settings: {', '.join(sorted(changes))}.")
    locked.full_clean()
    locked.save()
    events.balance_check(locked)
    return locked


@transaction.atomic
def tenant_set_status(*, tenants: QuerySet[Tenant], status: str) -> int:
    """Suspend or reactivate tenants; returns how many changed. A suspended tenant's keys are
    refused at once (403); its reservations stay as they are. Suspended tenants are told
    (``tenant.suspended``), in case a webhook still reaches someone."""
    now = utcnow()
    changing = list(tenants.exclude(status=status).order_by("pk").select_for_update(of=("self",)))
    for tenant in changing:
        tenant.status, tenant.updated_at = status, now
    # One UPDATE and one INSERT into the audit trail for all of them.
    bulk_update_audited(changing, ["status", "updated_at"])
    if status == Tenant.Status.SUSPENDED:
        for tenant in changing:
            events.tenant_suspended(tenant, now=now)
    return len(changing)
