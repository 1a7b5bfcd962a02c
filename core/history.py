"""The audit trail: who changed what, when, with the values before and after.

Each audited model declares ``history = AuditHistory(...)`` (django-simple-history): every
``save()`` and ``delete()`` of a row writes one row to its historical table, a full copy of the
row's fields with the date, the kind of change (created, changed, deleted), who made it and
the request that made it. The request comes from ``HistoryRequestMiddleware`` (settings).

Who:

* an operator in the admin, or anyone signed in with a session: ``history_user``, the Django
  user;
* a tenant through the API: its API key is not a Django user (``request.user`` is the key's
  principal), so ``history_user`` stays empty and the row keeps the key's prefix
  (``history_api_key_prefix``) and its tenant (``history_tenant_id``);
* a job or a command (no request): none of them; the change reason is empty too.

``history_change_reason`` is what the writer said (``update_change_reason`` or an object's
``_change_reason``), or else the request's method and path (``PATCH /api/v1/tenant/``).

Writes that bypass ``save()`` (``QuerySet.update``, ``bulk_create``) leave no history: a
service that changes audited rows in bulk writes them with ``bulk_update_audited``."""

from collections.abc import Iterable, Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import models
from django.utils import timezone
from simple_history.models import HistoricalRecords
from simple_history.utils import bulk_update_with_history, get_change_reason_from_object

REASON_MAX_LENGTH = 100  # simple-history's ``history_change_reason`` column


def current_request() -> Any:
    """The request being served on this thread or task, if any (set by the middleware)."""
    return getattr(HistoricalRecords.context, "request", None)


def request_actor(request: Any = None) -> dict[str, Any]:
    """The API key that makes the current request and its tenant, as historical-row fields:
    ``{"history_api_key_prefix": "3f9a0c1b2d4e", "history_tenant_id": 7}``; empty values for
    a request without a key (the admin), or outside a request. Read by duck typing, so core
    knows nothing of the marketplace's key model: ``request.auth`` is the key (with a
    ``prefix``), ``request.user`` its principal (with a ``tenant_id``)."""
    request = request if request is not None else current_request()
    prefix = getattr(getattr(request, "auth", None), "prefix", "") or ""
    tenant_id = getattr(getattr(request, "user", None), "tenant_id", None) if prefix else None
    return {"history_api_key_prefix": prefix, "history_tenant_id": tenant_id}


def _django_user(request: Any = None, **kwargs: Any) -> AbstractBaseUser | None:
    """``history_user``: the request's user when it is a Django user (the admin, a session);
    an API key's principal is not one, and is recorded by ``request_actor`` instead."""
    user = getattr(request, "user", None)
    return user if isinstance(user, AbstractBaseUser) else None


class AuditedChange(models.Model):
    """What every historical row has beyond simple-history's own fields: the API key that made
    the change, when it came through the API."""

    history_api_key_prefix = models.CharField(
        "API key",
        max_length=16,
        blank=True,
        default="",
        help_text="The API key that made the change (its visible prefix); empty otherwise.",
    )
    history_tenant_id = models.BigIntegerField(
        "tenant (API)",
        null=True,
        blank=True,
        help_text="The tenant whose API key made the change.",
    )

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.history_api_key_prefix:
            for field, value in request_actor().items():
                setattr(self, field, value)
        super().save(*args, **kwargs)

    @property
    def history_api_key(self) -> str:
        """The API key and tenant, as the admin's history page shows them."""
        if not self.history_api_key_prefix:
            return ""
        return f"{self.history_api_key_prefix} (tenant {self.history_tenant_id})"


# Each audited model's ``AuditHistory``, once the model is ready (``creation_record``).
_AUDITED: dict[type[models.Model], "AuditHistory"] = {}


class AuditHistory(HistoricalRecords):
    """``HistoricalRecords`` with the audit trail's defaults: historical rows carry the API key
    (``AuditedChange``), ``history_user`` is only ever a Django user, and the change reason
    falls back to the request. Pass ``excluded_fields`` for secrets and derived columns."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("bases", [AuditedChange])
        kwargs.setdefault("get_user", _django_user)
        super().__init__(**kwargs)

    def finalize(self, sender: type[models.Model], **kwargs: Any) -> None:
        super().finalize(sender, **kwargs)
        if sender is self.cls:
            _AUDITED[sender] = self

    def get_change_reason_for_object(self, instance: models.Model, history_type, using):
        return get_change_reason_from_object(instance) or request_reason() or None

    def unsaved_record(self, instance: models.Model, history_type: str) -> models.Model:
        """The historical row ``create_historical_record`` saves for ``instance``, not saved:
        the same fields, date, user, reason and API key."""
        manager = getattr(instance, self.manager_name)
        record = manager.model(
            history_date=getattr(instance, "_history_date", timezone.now()),
            history_type=history_type,
            history_user=self.get_history_user(instance),
            history_change_reason=self.get_change_reason_for_object(instance, history_type, None),
            **{
                field.attname: getattr(instance, field.attname)
                for field in self.fields_included(instance)
            },
        )
        for field, value in request_actor().items():  # as AuditedChange.save fills them in
            setattr(record, field, value)
        return record


def creation_record(instance: models.Model) -> models.Model | None:
    """The audit trail's row for creating ``instance`` (history type ``+``), not saved; None
    if its model keeps no history. For writes that insert rows without ``save()`` (so without
    simple-history's signal) but still owe the audit trail: ``core.db.insert_together``."""
    records = _AUDITED.get(type(instance))
    return records.unsaved_record(instance, "+") if records is not None else None


def request_reason(request: Any = None) -> str:
    """``"POST /api/v1/reservations/"``: the request that made a change, or "" outside one."""
    request = request if request is not None else current_request()
    method, path = getattr(request, "method", None), getattr(request, "path", None)
    if not method or not path:
        return ""
    return f"{method} {path}"[:REASON_MAX_LENGTH]


def bulk_update_audited(
    objs: Sequence[models.Model], fields: Iterable[str], *, reason: str = ""
) -> int:
    """``bulk_update`` of ``objs`` (of one audited model, already changed in memory) on
    ``fields``, with one historical row each, in two statements: for set-based changes that
    an operator or a tenant makes (an admin action on selected rows). Returns rows updated."""
    if not objs:
        return 0
    model = type(objs[0])
    history_user = _django_user(current_request())
    return bulk_update_with_history(
        list(objs),
        model,
        list(fields),
        default_user=history_user,
        default_change_reason=reason or request_reason(),
        custom_historical_attrs=request_actor(),
    )
