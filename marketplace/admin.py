"""Operator screens for the demand side. Every state change goes through a service; reservations
and idempotency records are read-only here, the money ledger is append-only."""

from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from core.errors import ApplicationError
from marketplace import selectors
from marketplace.models import (
    ApiKey,
    CancellationRule,
    CommitmentDiscount,
    IdempotencyRecord,
    LedgerEntry,
    Reservation,
    Tenant,
)
from marketplace.services import accounts, booking, tenants


class ReadOnlyAdminMixin:
    """Viewable, never added, changed or deleted from the admin."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ApiKeyInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ["prefix", "name", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = fields
    show_change_link = True


def _show_new_key(request: HttpRequest, tenant: Tenant, key: ApiKey, raw_key: str) -> None:
    messages.success(
        request,
        f"New API key for {tenant.name} (prefix {key.prefix}). Copy it now, it is not shown "
        f"again: {raw_key}",
    )


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
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
        return selectors.credit_available(tenant=obj)

    def get_inlines(self, request: HttpRequest, obj: Tenant | None):
        return self.inlines if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Tenant, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        # A new tenant goes through the service and gets its first key, shown once.
        fields = {
            name: value
            for name, value in form.cleaned_data.items()
            if name not in ("name", "slug", "members")
        }
        try:
            created = tenants.tenant_create(name=obj.name, slug=obj.slug, **fields)
        except (ApplicationError, ValidationError) as exc:
            self.message_user(request, f"Not created: {exc}", level=messages.ERROR)
            return
        obj.pk = created.pk
        obj.created_at, obj.updated_at = created.created_at, created.updated_at
        obj._state.adding = False
        obj._state.db = created._state.db
        key, raw_key = tenants.api_key_create(tenant=created)
        _show_new_key(request, created, key, raw_key)

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        if form.instance.pk is None:  # the service refused the tenant: nothing to relate
            return
        super().save_related(request, form, formsets, change)

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


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["prefix", "name", "tenant", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "tenant"]
    search_fields = ["prefix", "name", "tenant__name", "tenant__slug"]
    list_select_related = ["tenant"]
    # The digest is never shown: it is as good as a password hash for an attacker.
    fields = ["prefix", "name", "tenant", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = fields
    actions = ["revoke"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketplace.change_apikey")

    @admin.action(description="Revoke: the key stops working at once", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for key in queryset.filter(revoked_at__isnull=True):
            tenants.api_key_revoke(key=key)
            revoked += 1
        self.message_user(request, f"{revoked} API key(s) revoked.")


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
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
class CommitmentDiscountAdmin(admin.ModelAdmin):
    """The price book: longer reservations pay less. Applies to new bookings only."""

    list_display = ["min_hours", "percent"]


@admin.register(CancellationRule)
class CancellationRuleAdmin(admin.ModelAdmin):
    """The cancellation policy: the rule with the largest notice the cancellation meets
    applies."""

    list_display = ["min_notice_hours", "fee_percent"]


class LedgerPostingForm(forms.ModelForm):
    """An operator's posting: a prepaid top-up or a signed adjustment, in the tenant's
    currency, made through ``marketplace.services.accounts``."""

    class Meta:
        model = LedgerEntry
        fields = ["tenant", "kind", "amount", "reference", "memo"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [
            (LedgerEntry.Kind.TOP_UP, LedgerEntry.Kind.TOP_UP.label),
            (LedgerEntry.Kind.ADJUSTMENT, LedgerEntry.Kind.ADJUSTMENT.label),
        ]
        self.fields["reference"].help_text = "Unique per tenant and kind, e.g. TOPUP-2026-0001."
        self.posted_entry: LedgerEntry | None = None

    def _post_clean(self) -> None:
        # Post once the form and the model's own checks (e.g. the unique reference) pass, so
        # that a refusal by the service lands on the form. The admin's add view runs in one
        # transaction: anything failing after this rolls the entry back with it.
        super()._post_clean()
        if self.errors:
            return
        data = self.cleaned_data
        tenant = data["tenant"]
        try:
            if data["kind"] == LedgerEntry.Kind.TOP_UP:
                entry, created = accounts.top_up_create(
                    tenant=tenant,
                    amount=data["amount"],
                    reference=data["reference"],
                    memo=data["memo"],
                )
            else:
                entry, created = accounts.ledger_post(
                    tenant=tenant,
                    kind=LedgerEntry.Kind.ADJUSTMENT,
                    amount=data["amount"],
                    currency=tenant.currency,
                    reference=data["reference"],
                    memo=data["memo"],
                )
        except ApplicationError as exc:
            self.add_error(None, exc.detail)
            return
        if not created:
            self.add_error("reference", "This reference was already posted.")
            return
        self.posted_entry = entry


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The money ledger is append-only: entries are never changed or deleted. Operators may
    add top-ups and adjustments, posted through the accounts service; invoices, credit notes
    and payments come from billing."""

    list_display = ["created_at", "tenant", "kind", "amount", "currency", "reference", "memo"]
    list_filter = ["kind", "currency", "tenant"]
    search_fields = ["reference", "memo", "tenant__name"]
    list_select_related = ["tenant"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketplace.add_ledgerentry")

    def get_form(self, request: HttpRequest, obj: LedgerEntry | None = None, **kwargs):
        if obj is None:
            kwargs["form"] = LedgerPostingForm
            kwargs["fields"] = LedgerPostingForm.Meta.fields
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: LedgerEntry | None = None):
        if obj is None:
            return LedgerPostingForm.Meta.fields
        return super().get_fields(request, obj)

    def save_form(self, request: HttpRequest, form, change: bool) -> LedgerEntry:
        return form.posted_entry  # already posted by the form, through the service

    def save_model(self, request: HttpRequest, obj: LedgerEntry, form, change: bool) -> None:
        pass  # see save_form

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        pass  # a ledger entry has no many-to-many fields nor inlines


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "tenant", "scope", "key", "status_code", "reservation"]
    list_filter = ["scope", "tenant"]
    search_fields = ["key", "reservation__id"]
    list_select_related = ["tenant", "reservation"]
