"""Operator screens for the demand side. Every state change goes through a service; reservations
and idempotency records are read-only here, the money ledger is append-only.

Capacity incidents are recorded here rather than in the capacity app: recording one moves the
reservations it hits (``marketplace.services.displacement``), which capacity knows nothing of."""

import hashlib
import json
from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, router, transaction
from django.db.models import (
    QuerySet,
)
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from billing.credit import credit_available
from capacity.admin import pool_inline_add
from capacity.models import CapacityPool, Incident
from capacity.selectors import ledger_open_from
from core.admin import ServiceFormAdminMixin
from core.errors import ApplicationError
from core.history_admin import HistoryAdmin
from core.timeutils import is_whole_hour, utcnow
from marketplace import selectors
from marketplace.models import (
    ApiKey,
    CancellationRule,
    CommitmentDiscount,
    Displacement,
    DisplacementRule,
    IdempotencyRecord,
    Placement,
    PoolPrice,
    Reservation,
    Tenant,
)
from marketplace.services import booking, tenants
from marketplace.services.displacement import (
    affected_reservations,
    displacement_preview,
    incident_close,
    incident_displace,
    incident_record,
)


class ReadOnlyAdminMixin:
    """Viewable, never added, changed or deleted from the admin."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.display(description="Scopes")
def scope_list(key: ApiKey) -> str:
    return ", ".join(key.scopes)


class ApiKeyInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = [
        "prefix",
        "name",
        scope_list,
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    readonly_fields = fields
    show_change_link = True


def _show_new_key(request: HttpRequest, tenant: Tenant, key: ApiKey, raw_key: str) -> None:
    messages.success(
        request,
        f"New API key for {tenant.name} (prefix {key.prefix}). Copy it now, it is not shown "
        f"again: {raw_key}",
    )


class TenantForm(forms.ModelForm):
    """The operator's tenant form. The billing currency is fixed once the tenant has history:
    ``tenant_update`` checks that under the tenant's lock, and its refusal
    (``currency_locked``) shows on the currency field."""

    class Meta:
        model = Tenant
        fields = ["currency"]  # TenantAdmin's fieldsets name the fields the page shows

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "currency" in self.fields:
            self.fields["currency"].help_text = (
                "Prices, balance and invoices are in this currency; the tenant is offered only "
                "pools priced in it. Fixed once the tenant has reservations, ledger entries or "
                "invoices."
            )


@admin.register(Tenant)
class TenantAdmin(ServiceFormAdminMixin, HistoryAdmin):
    """Tenants are created with ``tenant_create`` (and get a first API key, shown once) and
    edited with ``tenant_update``; the services' refusals show on the form's fields."""

    form = TenantForm
    list_display = [
        "name",
        "slug",
        "status",
        "currency",
        "credit_limit",
        "credit_available",
        "max_gpus",
        "max_reservation_hours",
        "discount_percent",
    ]
    list_filter = ["status", "currency"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["members"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    readonly_fields = ["credit_available", "low_balance_alerted", "created_at", "updated_at"]
    inlines = [ApiKeyInline]
    actions = ["suspend", "reactivate", "create_api_key"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "status", "members"]}),
        (
            "Money",
            {
                "fields": [
                    "currency",
                    "credit_limit",
                    "credit_available",
                    "discount_percent",
                    "tax_rate_percent",
                ]
            },
        ),
        ("Quotas", {"fields": ["max_gpus", "max_reservation_hours"]}),
        (
            "Notifications",
            {"fields": ["ending_soon_lead", "low_balance_threshold", "low_balance_alerted"]},
        ),
        ("Record", {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description="Credit available")
    def credit_available(self, obj: Tenant) -> Decimal | str:
        if obj.pk is None:
            return "-"
        return credit_available(tenant=obj)

    def get_inlines(self, request: HttpRequest, obj: Tenant | None):
        return self.inlines if obj is not None else []

    def perform_save(self, request: HttpRequest, form: TenantForm, change: bool) -> Tenant:
        fields = {name: value for name, value in form.cleaned_data.items() if name != "members"}
        if change:
            changes = {name: fields[name] for name in form.changed_data if name in fields}
            return tenants.tenant_update(tenant=form.instance, **changes)
        created = tenants.tenant_create(**fields)
        # Its first key, shown once the tenant is saved (response_add).
        created.new_api_key = tenants.api_key_create(tenant=created)
        return created

    def response_add(self, request: HttpRequest, obj: Tenant, post_url_continue=None):
        key, raw_key = obj.new_api_key
        _show_new_key(request, obj, key, raw_key)
        return super().response_add(request, obj, post_url_continue)

    @admin.action(description="Suspend: refuse their API keys", permissions=["change"])
    def suspend(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        changed = tenants.tenant_set_status(tenants=queryset, status=Tenant.Status.SUSPENDED)
        self.message_user(request, f"{changed} tenant(s) suspended.")

    @admin.action(description="Reactivate", permissions=["change"])
    def reactivate(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        changed = tenants.tenant_set_status(tenants=queryset, status=Tenant.Status.ACTIVE)
        self.message_user(request, f"{changed} tenant(s) reactivated.")

    @admin.action(description="Create an API key (shown once)", permissions=["change"])
    def create_api_key(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            key, raw_key = tenants.api_key_create(tenant=tenant, name="admin")
            _show_new_key(request, tenant, key, raw_key)


class PoolPriceInline(admin.TabularInline):
    """The pool's list prices, one per currency it is sold in (none: it is offered to nobody).
    A tenant is offered only pools priced in its own currency; bookings keep the price they
    were made at."""

    model = PoolPrice
    verbose_name = "list price"
    verbose_name_plural = "list prices (price book)"
    extra = 0
    fields = ["currency", "price_per_gpu_hour"]


pool_inline_add(PoolPriceInline)  # on the capacity pool page


@admin.register(PoolPrice)
class PoolPriceAdmin(HistoryAdmin):
    """The price book: every pool's list price per GPU-hour, per currency."""

    list_display = ["pool", "currency", "price_per_gpu_hour"]
    list_filter = ["currency", "pool__gpu_model", "pool__region__provider"]
    list_editable = ["price_per_gpu_hour"]
    list_select_related = ["pool"]
    search_fields = ["pool__slug", "pool__name"]
    autocomplete_fields = ["pool"]


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdminMixin, HistoryAdmin):
    list_display = [
        "prefix",
        "name",
        "tenant",
        scope_list,
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "tenant"]
    search_fields = ["prefix", "name", "tenant__name", "tenant__slug"]
    list_select_related = ["tenant"]
    # The digest is never shown: it is as good as a password hash for an attacker.
    fields = [
        "prefix",
        "name",
        "tenant",
        scope_list,
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    readonly_fields = fields
    actions = ["revoke"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketplace.change_apikey")

    @admin.action(description="Revoke: the key stops working at once", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for key in queryset.filter(revoked_at__isnull=True):
            tenants.api_key_operator_revoke(key=key)
            revoked += 1
        self.message_user(request, f"{revoked} API key(s) revoked.")


class ReservationPlacementInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Where the reservation's GPUs are: its own pool, and any pool an incident moved them to."""

    model = Placement
    extra = 0
    fields = ["pool", "start", "end", "gpus", "incident"]
    readonly_fields = fields
    verbose_name_plural = "placements (where its GPUs are)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Placement]:
        return super().get_queryset(request).select_related("pool", "incident")


class ReservationDisplacementInline(ReadOnlyAdminMixin, admin.TabularInline):
    """What incidents took from the reservation: moved elsewhere, or lost (not billed)."""

    model = Displacement
    extra = 0
    fields = ["incident", "start", "end", "gpus_taken", "gpus_moved", "gpus_lost", "created_at"]
    readonly_fields = fields
    verbose_name_plural = "displacements by incidents"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Displacement]:
        return super().get_queryset(request).select_related("incident")


@admin.register(Reservation)
class ReservationAdmin(HistoryAdmin):
    """Reservations change only through the booking service: view, filter and cancel."""

    list_display = [
        "id",
        "tenant",
        "pool",
        "status",
        "gpu_count",
        "start",
        "end",
        "unit_price",
        "total_price",
        "charge",
        "currency",
        "created_at",
    ]
    list_filter = ["status", "pool", "tenant"]
    search_fields = ["id", "tenant__name", "tenant__slug"]
    list_select_related = ["tenant", "pool"]
    date_hierarchy = "start"
    inlines = [ReservationPlacementInline, ReservationDisplacementInline]
    actions = ["cancel"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketplace.change_reservation")

    @admin.action(
        description="Cancel (releases the capacity; the cancellation policy applies)",
        permissions=["cancel"],
    )
    def cancel(self, request: HttpRequest, queryset: QuerySet[Reservation]) -> None:
        cancelled_by = f"operator:{request.user.get_username()}"
        cancelled = 0
        for reservation in queryset.select_related("tenant"):
            try:
                booking.reservation_cancel(
                    tenant=reservation.tenant,
                    reservation_id=reservation.pk,
                    cancelled_by=cancelled_by,
                    reason="Cancelled by an operator.",
                )
            except ApplicationError as exc:
                self.message_user(
                    request, f"{reservation.pk}: not cancelled: {exc.detail}", level=messages.ERROR
                )
            else:
                cancelled += 1
        self.message_user(request, f"{cancelled} reservation(s) cancelled.")


@admin.register(CommitmentDiscount)
class CommitmentDiscountAdmin(HistoryAdmin):
    """The price book: longer reservations pay less. Applies to new bookings only."""

    list_display = ["min_hours", "percent"]


@admin.register(CancellationRule)
class CancellationRuleAdmin(HistoryAdmin):
    """The cancellation policy: the rule with the largest notice the cancellation meets
    applies."""

    list_display = ["min_notice_hours", "fee_percent"]


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "tenant", "scope", "key", "reservation"]
    list_filter = ["scope", "tenant"]
    search_fields = ["key", "reservation__id"]
    list_select_related = ["tenant", "reservation"]


# --- capacity incidents ------------------------------------------------------------------------


def _preview_digest(fields: dict, preview: list[tuple[Reservation, int]]) -> str:
    """What the operator confirms: this incident taking these GPUs from these reservations."""
    payload = [
        fields["pool"].pk,
        fields["gpus"],
        fields["start"].isoformat(),
        fields["end"].isoformat() if fields["end"] else None,
        [[str(reservation.pk), gpus] for reservation, gpus in preview],
    ]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:32]


class IncidentRecordForm(forms.ModelForm):
    """The input of a new incident, which ``IncidentAdmin`` records through
    ``incident_record`` (that also moves or shrinks the reservations it hits). Planned
    maintenance that would take booked GPUs is valid only once the operator has seen who
    loses them and confirmed exactly that list; failures, recalls and reclaims are facts and
    are recorded at once. The form writes nothing: it reads the preview to ask."""

    confirm_displacement = forms.BooleanField(
        required=False,
        label="Confirm displacement",
        help_text="Planned maintenance that takes booked GPUs is recorded only when this is "
        "ticked after the reservations it displaces were shown.",
    )
    preview_digest = forms.CharField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = Incident
        fields = ["pool", "kind", "gpus", "start", "end", "reason"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        end = self.fields["end"]
        end.help_text = "First hour back (UTC). Leave empty while it lasts; close it when over."
        self.preview: list[dict] = []

    def _post_clean(self) -> None:
        # The service judges the incident when the admin records it (the model's checks are
        # the database's constraints behind it), so that its refusals land on the fields they
        # are about: only the confirmation of planned maintenance is asked here.
        if self.errors:
            return
        data = self.cleaned_data
        fields = {name: data[name] for name in ("pool", "kind", "gpus", "start", "end")}
        if fields["kind"] == Incident.Kind.MAINTENANCE and self._recordable(**fields):
            preview = displacement_preview(
                pool=fields["pool"], gpus=fields["gpus"], start=fields["start"], end=fields["end"]
            )
            digest = _preview_digest(fields, preview)
            confirmed = data["confirm_displacement"] and data["preview_digest"] == digest
            if preview and not confirmed:
                self._ask_confirmation(preview, digest)

    @staticmethod
    def _recordable(*, pool: CapacityPool, kind: str, gpus: int, start, end) -> bool:
        """Whether the service would take this maintenance: only then is it worth asking
        the operator to confirm what it displaces (the service decides either way)."""
        return (
            0 < gpus <= pool.total_gpus
            and is_whole_hour(start)
            and start >= ledger_open_from()
            and (end is None or (is_whole_hour(end) and end > start))
        )

    def _ask_confirmation(self, preview: list[tuple[Reservation, int]], digest: str) -> None:
        names = dict(
            Tenant.objects.filter(
                pk__in={reservation.tenant_id for reservation, _ in preview}
            ).values_list("pk", "name")
        )
        self.preview = [
            {
                "reservation": reservation,
                "tenant": names[reservation.tenant_id],
                "gpus_lost": gpus,
                "url": reverse("admin:marketplace_reservation_change", args=[reservation.pk]),
            }
            for reservation, gpus in preview
        ]
        # Shown again with the list: the box unticked, the list it confirms carried along.
        self.data = self.data.copy()
        self.data[self.add_prefix("preview_digest")] = digest
        self.data.pop(self.add_prefix("confirm_displacement"), None)
        self.add_error(
            "confirm_displacement",
            f"This maintenance takes booked GPUs from {len(preview)} reservation(s), listed "
            "above: they move to other pools where there is room and lose those GPUs for its "
            "hours where there is none. Tick to record it anyway.",
        )


class IncidentStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [("open", "Open (no end yet)"), ("closed", "With an end")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Incident]) -> QuerySet[Incident]:
        if self.value() == "open":
            return queryset.filter(end__isnull=True)
        if self.value() == "closed":
            return queryset.filter(end__isnull=False)
        return queryset


class IncidentDisplacementInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The incident's move log: per reservation and span, GPUs taken off the pool, moved to
    other pools and lost."""

    model = Displacement
    extra = 0
    fields = [
        "reservation_link",
        "tenant",
        "start",
        "end",
        "gpus_taken",
        "gpus_moved",
        "gpus_lost",
    ]
    readonly_fields = fields
    verbose_name_plural = "displaced reservations"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Displacement]:
        return super().get_queryset(request).select_related("reservation__tenant")

    @admin.display(description="Reservation")
    def reservation_link(self, obj: Displacement) -> str:
        url = reverse("admin:marketplace_reservation_change", args=[obj.reservation_id])
        return format_html('<a href="{}">{}</a>', url, obj.reservation_id)

    @admin.display(description="Tenant")
    def tenant(self, obj: Displacement) -> str:
        return obj.reservation.tenant.name


def _due(incident: Incident, now) -> bool:
    """A recall is displaced when it starts (its tenants were notified); anything else now."""
    return incident.kind != Incident.Kind.RECALL or incident.start <= now


def _closable(incident: Incident, now) -> bool:
    return incident.closed_at is None and (incident.end is None or incident.end > now)


@admin.register(Incident)
class IncidentAdmin(ServiceFormAdminMixin, HistoryAdmin):
    """Capacity incidents: GPUs of a pool out of service. Recording one (``incident_record``,
    in ``perform_save``) takes the GPUs off the capacity ledger and moves the reservations that
    no longer fit to other pools (or shrinks them where there is no room), within the screen's
    time budget; a recall with notice tells its tenants now and moves them when it starts.
    Recorded incidents are history: only the reason may be edited, and they are closed, never
    deleted."""

    list_display = [
        "id",
        "pool",
        "kind",
        "gpus",
        "start",
        "until",
        "short_notice",
        "displaced_at",
        "reservations_affected",
        "gpu_hours_moved",
        "gpu_hours_lost",
        "sla_credited",
    ]
    list_filter = ["kind", IncidentStateFilter, "pool__region__provider"]
    search_fields = ["pool__slug", "reason"]
    date_hierarchy = "start"
    actions = ["close_now", "displace_again"]
    add_form_template = change_form_template = "admin/marketplace/incident_form.html"
    figures = ["reservations_affected", "gpu_hours_moved", "gpu_hours_lost", "sla_credited"]
    record = ["short_notice", "recorded_by", "created_at", "closed_at", "displaced_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Incident]:
        return selectors.incidents_with_figures(
            super().get_queryset(request).select_related("pool")
        )

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_fieldsets(self, request: HttpRequest, obj: Incident | None = None):
        if obj is None:
            return [
                (None, {"fields": IncidentRecordForm.Meta.fields}),
                ("Planned maintenance", {"fields": ["confirm_displacement", "preview_digest"]}),
            ]
        return [
            (None, {"fields": ["pool", "kind", "gpus", "start", "until", "reason"]}),
            ("Effect on reservations", {"fields": self.figures}),
            ("Record", {"fields": self.record}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Incident | None = None):
        if obj is None:
            return []
        return ["pool", "kind", "gpus", "start", "until", *self.figures, *self.record]

    def get_form(self, request: HttpRequest, obj: Incident | None = None, **kwargs):
        if obj is None:
            kwargs["form"] = IncidentRecordForm
        return super().get_form(request, obj, **kwargs)

    def get_inlines(self, request: HttpRequest, obj: Incident | None):
        return [IncidentDisplacementInline] if obj is not None else []

    def perform_save(self, request: HttpRequest, form, change: bool) -> Incident:
        if change:  # the reason is all that may change: the rest is in the ledger
            form.instance.save(update_fields=["reason"])
            return form.instance
        data = form.cleaned_data
        return incident_record(
            **{name: data[name] for name in ("pool", "kind", "gpus", "start", "end")},
            reason=data["reason"],
            recorded_by=request.user.get_username(),
            time_budget=settings.INCIDENT_ADMIN_DISPLACE_SECONDS,
        )

    def response_add(self, request: HttpRequest, obj: Incident, post_url_continue=None):
        incident = self.get_queryset(request).get(pk=obj.pk)
        for message, level in self._recorded_messages(incident):
            self.message_user(request, message, level=level)
        if "_addanother" in request.POST:
            return HttpResponseRedirect(reverse("admin:capacity_incident_add"))
        return HttpResponseRedirect(reverse("admin:capacity_incident_change", args=[obj.pk]))

    def _recorded_messages(self, incident: Incident) -> list[tuple[str, int]]:
        label = f"{incident.get_kind_display()} #{incident.pk} on {incident.pool.slug}"
        if not _due(incident, utcnow()):
            notice = " at short notice" if incident.short_notice else ""
            return [
                (
                    f"{label} recorded{notice}: {len(affected_reservations(incident))} "
                    "reservation(s) notified; their GPUs are moved when it starts, at "
                    f"{incident.start:%Y-%m-%d %H:%M} UTC.",
                    messages.SUCCESS,
                )
            ]
        if not incident.affected_count:
            shown = [(f"{label} recorded: no reservation was affected.", messages.SUCCESS)]
        else:
            shown = [
                (
                    f"{label} recorded: {incident.affected_count} reservation(s) displaced, "
                    f"{incident.moved_gpu_hours} GPU-hours moved to other pools, "
                    f"{incident.lost_gpu_hours} GPU-hours lost.",
                    messages.WARNING if incident.lost_gpu_hours else messages.SUCCESS,
                )
            ]
        if incident.displaced_at is None:
            shown.append(
                (
                    "Some booked GPUs are still to be moved; the displacement job goes on in "
                    "the background (this page's figures grow as it does).",
                    messages.WARNING,
                )
            )
        return shown

    # --- figures

    @admin.display(description="End", ordering="end")
    def until(self, obj: Incident) -> str:
        return display_for_value(obj.end, "") if obj.end is not None else "open"

    @admin.display(description="Reservations affected", ordering="affected_count")
    def reservations_affected(self, obj: Incident) -> int:
        return obj.affected_count

    @admin.display(description="GPU-hours moved", ordering="moved_gpu_hours")
    def gpu_hours_moved(self, obj: Incident) -> int:
        return obj.moved_gpu_hours

    @admin.display(description="GPU-hours lost", ordering="lost_gpu_hours")
    def gpu_hours_lost(self, obj: Incident) -> int:
        return obj.lost_gpu_hours

    @admin.display(description="SLA credited", ordering="credited_amount")
    def sla_credited(self, obj: Incident) -> str:
        if obj.credited_amount is None:
            return "-"
        return f"{obj.credited_amount} {obj.pool.currency}"

    # --- closing and displacing: actions on the list, buttons on the incident's page

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/close/",
                self.admin_site.admin_view(self.close_view),
                name="{}_{}_close".format(*info),
            ),
            path(
                "<path:object_id>/displace/",
                self.admin_site.admin_view(self.displace_view),
                name="{}_{}_displace".format(*info),
            ),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id, form_url="", extra_context=None):
        incident = self.get_object(request, unquote(object_id))
        if incident is not None and self.has_change_permission(request, incident):
            now = utcnow()
            extra_context = {
                **(extra_context or {}),
                "close_url": reverse("admin:capacity_incident_close", args=[incident.pk])
                if _closable(incident, now)
                else None,
                "displace_url": reverse("admin:capacity_incident_displace", args=[incident.pk])
                if incident.displaced_at is None and _due(incident, now)
                else None,
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def _button_view(self, request: HttpRequest, object_id: str, act) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        incident = self.get_object(request, unquote(object_id))
        if incident is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, incident):
            raise PermissionDenied
        act(request, incident, utcnow())
        return HttpResponseRedirect(reverse("admin:capacity_incident_change", args=[incident.pk]))

    def close_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._button_view(request, object_id, self._close)

    def displace_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._button_view(request, object_id, self._displace)

    @admin.action(description="Close now: the GPUs are back from the next whole hour")
    def close_now(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        now = utcnow()
        for incident in queryset:
            self._close(request, incident, now)

    @admin.action(description="Displace again: move what the incident still leaves booked")
    def displace_again(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        now = utcnow()
        for incident in queryset:
            self._displace(request, incident, now)

    def _close(self, request: HttpRequest, incident: Incident, now) -> None:
        if not _closable(incident, now):
            self.message_user(
                request, f"Incident #{incident.pk} is already over.", level=messages.WARNING
            )
            return
        try:
            closed = incident_close(incident=incident, now=now)
        except ApplicationError as exc:
            self.message_user(
                request, f"Incident #{incident.pk} not closed: {exc.detail}", level=messages.ERROR
            )
            return
        if closed.end == closed.start:
            self.message_user(request, f"Incident #{closed.pk} withdrawn before it began.")
        else:
            self.message_user(
                request,
                f"Incident #{closed.pk} closed: {incident.pool.slug}'s GPUs are back from "
                f"{closed.end:%Y-%m-%d %H:%M} UTC.",
            )

    def _displace(self, request: HttpRequest, incident: Incident, now) -> None:
        if incident.displaced_at is not None:
            self.message_user(
                request,
                f"Incident #{incident.pk} was already displaced: nothing left to move.",
                level=messages.WARNING,
            )
            return
        if not _due(incident, now):
            self.message_user(
                request,
                f"Recall #{incident.pk} is not due: its reservations are moved when it starts, "
                f"at {incident.start:%Y-%m-%d %H:%M} UTC.",
                level=messages.WARNING,
            )
            return
        result = incident_displace(incident=incident, now=now)
        self.message_user(
            request,
            f"Incident #{incident.pk}: {result.reservations} reservation(s) displaced, "
            f"{result.gpu_hours_moved} GPU-hours moved to other pools, "
            f"{result.gpu_hours_lost} GPU-hours lost."
            + (
                f" {result.remaining_excess} GPU-hours are still to be moved (reservations "
                "busy); the displacement job retries within a minute."
                if result.remaining_excess
                else ""
            ),
            level=messages.WARNING
            if result.gpu_hours_lost or result.remaining_excess
            else messages.SUCCESS,
        )


class DisplacementRuleForm(forms.ModelForm):
    """A position already taken may be given: the rule holding it moves to the end when this
    one is saved (see ``DisplacementRuleAdmin.save_model``), so two rules can swap places in
    the list in one save."""

    class Meta:
        model = DisplacementRule
        fields = ["position", "order"]

    def _get_validation_exclusions(self):
        return {*super()._get_validation_exclusions(), "position"}


class DisplacementRuleFormSet(forms.BaseModelFormSet):
    def clean(self) -> None:
        super().clean()
        positions = [form.cleaned_data.get("position") for form in self.forms]
        taken = sorted({p for p in positions if p is not None and positions.count(p) > 1})
        if taken:
            raise ValidationError(
                f"Position {', '.join(map(str, taken))} is given to more than one rule."
            )


@admin.register(DisplacementRule)
class DisplacementRuleAdmin(HistoryAdmin):
    """The displacement policy: when an incident leaves a pool with more GPUs booked than it
    has, reservations lose GPUs in this order (lowest position first; later rules break ties
    of earlier ones). Applies to the next displacement."""

    form = DisplacementRuleForm
    list_display = ["position", "order"]
    list_display_links = ["order"]
    list_editable = ["position"]

    def get_changelist_form(self, request: HttpRequest, **kwargs):
        return super().get_changelist_form(request, form=DisplacementRuleForm, **kwargs)

    def get_changelist_formset(self, request: HttpRequest, **kwargs):
        return super().get_changelist_formset(request, formset=DisplacementRuleFormSet, **kwargs)

    def save_model(self, request: HttpRequest, obj: DisplacementRule, form, change: bool) -> None:
        with transaction.atomic(using=router.db_for_write(DisplacementRule)):
            rules = DisplacementRule.objects.select_for_update()
            holder = rules.filter(position=obj.position).exclude(pk=obj.pk).first()
            if holder is not None:
                holder.position = max(rules.values_list("position", flat=True)) + 1
                holder.save(update_fields=["position"])  # save(): recorded in its history
            super().save_model(request, obj, form, change)


@admin.register(Displacement)
class DisplacementAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The move log of every incident, read-only: written once by the displacement."""

    list_display = [
        "incident",
        "reservation",
        "tenant",
        "start",
        "end",
        "gpus_taken",
        "gpus_moved",
        "gpus_lost",
        "created_at",
    ]
    list_filter = ["incident__kind", "incident__pool"]
    search_fields = ["reservation__id"]
    list_select_related = ["incident", "reservation__tenant"]
    date_hierarchy = "start"

    @admin.display(description="Tenant", ordering="reservation__tenant__name")
    def tenant(self, obj: Displacement) -> str:
        return obj.reservation.tenant.name
