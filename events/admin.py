"""Operator screens for events and webhooks. Events, deliveries and attempts are records:
read-only here. Endpoints belong to their tenants: operators see them (never their secrets in
full), disable or re-enable them and resend deliveries, each through ``events.services``."""

import json

from django.contrib import admin, messages
from django.db.models import F, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from core.errors import ApplicationError
from core.history_admin import HistoryAdmin
from events import services
from events.models import Delivery, DeliveryAttempt, Event, WebhookEndpoint
from events.types import EVENT_TYPES

SECRET_SHOWN = 10  # characters: "whsec_" and the first four of the key, enough to tell apart


class ReadOnlyAdminMixin:
    """Viewable, never added, changed or deleted from the admin."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def _masked(secret: str) -> str:
    return f"{secret[:SECRET_SHOWN]}…" if secret else "-"


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdminMixin, HistoryAdmin):
    """A tenant's endpoint, as the tenant set it up through the API. Operators only switch it
    off (reason "by_operator") or on again."""

    list_display = [
        "id",
        "tenant_id",
        "url",
        "enabled",
        "disabled_reason",
        "failing_since",
        "last_success_at",
    ]
    list_filter = ["enabled", "disabled_reason"]
    search_fields = ["url", "tenant_id__exact"]
    show_full_result_count = False
    actions = ["disable", "enable"]
    fieldsets = [
        (None, {"fields": ["tenant_id", "url", "description", "event_types"]}),
        (
            "State",
            {
                "fields": [
                    "enabled",
                    "disabled_reason",
                    "disabled_at",
                    "failing_since",
                    "last_success_at",
                ]
            },
        ),
        ("Signing", {"fields": ["secret_prefix", "previous_secret_prefix"]}),
        (
            "Record",
            {"fields": ["previous_secret_expires_at", "created_at", "updated_at"]},
        ),
    ]
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]

    @admin.display(description="Secret")
    def secret_prefix(self, obj: WebhookEndpoint) -> str:
        return _masked(obj.secret)

    @admin.display(description="Previous secret")
    def previous_secret_prefix(self, obj: WebhookEndpoint) -> str:
        return _masked(obj.previous_secret)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("events.change_webhookendpoint")

    def _set_enabled(
        self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint], enabled: bool
    ) -> int:
        changed = 0
        for endpoint_id, tenant_id in queryset.values_list("pk", "tenant_id"):
            try:
                changed += services.endpoint_set_enabled_by_operator(
                    tenant_id=tenant_id, endpoint_id=endpoint_id, enabled=enabled
                )
            except ApplicationError as exc:
                self.message_user(request, f"#{endpoint_id}: {exc.detail}", level=messages.ERROR)
        return changed

    @admin.action(
        description="Disable (by an operator): deliveries wait, pending", permissions=["operate"]
    )
    def disable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        changed = self._set_enabled(request, queryset, enabled=False)
        self.message_user(request, f"{changed} endpoint(s) disabled.")

    @admin.action(
        description="Enable (clears the reason and failure streak)", permissions=["operate"]
    )
    def enable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        changed = self._set_enabled(request, queryset, enabled=True)
        self.message_user(request, f"{changed} endpoint(s) enabled.")


class EventTypeFilter(admin.SimpleListFilter):
    """The known types, without scanning the events table for them."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [(name, name) for name in sorted(EVENT_TYPES)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Event]) -> QuerySet[Event]:
        if self.value():
            return queryset.filter(type=self.value())
        return queryset


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "tenant_id", "sequence", "type", "created_at"]
    list_filter = [EventTypeFilter]
    # Exact matches: "id" then uses the primary key's index.
    search_fields = ["id__exact", "type__exact"]
    show_full_result_count = False
    ordering = ["-created_at", "-id"]
    fields = ["id", "tenant_id", "sequence", "type", "created_at", "data_pretty"]
    readonly_fields = fields

    @admin.display(description="Data")
    def data_pretty(self, obj: Event) -> str:
        return format_html(
            "<pre>{}</pre>", json.dumps(obj.data, indent=2, sort_keys=True, ensure_ascii=False)
        )


class DeliveryAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    fields = ["attempted_at", "status_code", "duration_ms", "response_body", "error"]
    readonly_fields = fields
    ordering = ["attempted_at", "id"]


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "event_ref",
        "event_type",
        "endpoint_url",
        "tenant_id",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "created_at",
        "delivered_at",
    ]
    list_filter = ["status"]
    search_fields = ["event__id__exact"]
    show_full_result_count = False
    inlines = [DeliveryAttemptInline]
    actions = ["resend"]
    fields = [
        "event",
        "event_type",
        "endpoint",
        "endpoint_url",
        "tenant_id",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        # The event's type and the endpoint's URL, not the whole rows: event data can be large.
        return (
            super()
            .get_queryset(request)
            .annotate(event_type=F("event__type"), endpoint_url=F("endpoint__url"))
        )

    @admin.display(description="Event", ordering="event_id")
    def event_ref(self, obj: Delivery) -> str:
        return obj.event_id

    @admin.display(description="Type", ordering="event_type")
    def event_type(self, obj: Delivery) -> str:
        return obj.event_type

    @admin.display(description="Endpoint URL")
    def endpoint_url(self, obj: Delivery) -> str:
        return obj.endpoint_url

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("events.change_delivery")

    @admin.action(description="Resend: back to pending, due now", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        resent = services.delivery_resend(delivery_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"{resent} delivery(ies) will be sent again.")


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "delivery", "attempted_at", "status_code", "duration_ms", "error"]
    list_select_related = ["delivery"]
    show_full_result_count = False
    fields = ["delivery", "attempted_at", "status_code", "duration_ms", "response_body", "error"]
    readonly_fields = fields
