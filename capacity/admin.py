"""Operator screens for the supply side. Pools are created and edited through the services so
the ledger follows (and a pool edit that would strand booked GPUs is refused, on the form).
Incidents are recorded on the marketplace's incident screen, which also moves the reservations
they hit."""

from django import forms
from django.contrib import admin
from django.db.models import F, Q

from capacity import services
from capacity.errors import CapacityInUse
from capacity.models import (
    CapacityPool,
    GpuModel,
    Incident,
    PoolCostRate,
    PoolHour,
    Provider,
    Region,
)
from core.admin import ServiceFormAdminMixin
from core.history_admin import HistoryAdmin
from core.timeutils import utcnow


class RegionInline(admin.TabularInline):
    model = Region
    extra = 0
    fields = ["code", "name", "country"]


@admin.register(Provider)
class ProviderAdmin(HistoryAdmin):
    list_display = ["name", "slug", "kind", "region_count"]
    list_filter = ["kind"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [RegionInline]

    @admin.display(description="Regions")
    def region_count(self, obj: Provider) -> int:
        return obj.regions.count()


@admin.register(Region)
class RegionAdmin(HistoryAdmin):
    list_display = ["code", "name", "provider", "country"]
    list_filter = ["provider", "country"]
    search_fields = ["code", "name"]
    list_select_related = ["provider"]


@admin.register(GpuModel)
class GpuModelAdmin(HistoryAdmin):
    list_display = ["name", "slug", "vendor", "memory_gb", "interconnect", "architecture"]
    list_filter = ["vendor"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


class OpenIncidentInline(admin.TabularInline):
    """The pool's open and coming incidents; recorded and closed on the incident screen."""

    model = Incident
    verbose_name_plural = "open and coming incidents"
    extra = 0
    fields = ["kind", "gpus", "start", "end", "reason", "short_notice"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        # Open, in progress or coming; not closed, past or withdrawn (end == start).
        return (
            super()
            .get_queryset(request)
            .filter(Q(end__isnull=True) | (Q(end__gt=utcnow()) & Q(end__gt=F("start"))))
        )


class PoolCostRateInline(admin.TabularInline):
    """What the pool has cost per GPU-hour over time, newest first: written by a change of
    ``cost_per_gpu_hour`` (from the hour in progress on), never edited; metering costs each
    hour at the rate in force then."""

    model = PoolCostRate
    verbose_name_plural = "cost history"
    extra = 0
    fields = ["effective_from", "cost_per_gpu_hour"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# Inlines other apps show on the pool page for their own rows about a pool (the marketplace's
# price book), added with ``pool_inline_add``: capacity imports none of them.
POOL_INLINES: list[type[admin.options.InlineModelAdmin]] = []


def pool_inline_add(inline: type[admin.options.InlineModelAdmin]) -> None:
    if inline not in POOL_INLINES:
        POOL_INLINES.append(inline)


class CapacityPoolForm(forms.ModelForm):
    """The pool's input; whether the booked GPUs still fit is the service's call
    (``pool_update`` refuses with ``capacity_in_use``)."""

    class Meta:
        model = CapacityPool
        fields = [
            "slug",
            "name",
            "region",
            "gpu_model",
            "tier",
            "recall_notice_hours",
            "status",
            "external_id",
            "gpus_per_node",
            "node_count",
            "reserved_gpus",
            "allow_partial_nodes",
            "available_from",
            "available_until",
            "currency",
            "cost_per_gpu_hour",
        ]


@admin.register(CapacityPool)
class CapacityPoolAdmin(ServiceFormAdminMixin, HistoryAdmin):
    """Pools are added with ``pool_create`` (which starts the cost history) and changed with
    ``pool_update`` (the ledger follows); the refusals show on the form."""

    form = CapacityPoolForm
    # Booked GPUs that would no longer fit: shown on the size and window fields changed.
    refusal_fields = {
        CapacityInUse.code: [
            "gpus_per_node",
            "node_count",
            "reserved_gpus",
            "available_from",
            "available_until",
        ]
    }
    list_display = [
        "slug",
        "gpu_model",
        "region",
        "tier",
        "status",
        "node_count",
        "gpus_per_node",
        "total_gpus",
        "reserved_gpus",
        "cost_per_gpu_hour",
        "currency",
        "available_until",
    ]
    list_filter = ["status", "tier", "gpu_model", "region__provider", "currency"]
    search_fields = ["slug", "name", "external_id", "region__code"]
    list_select_related = ["gpu_model", "region__provider"]
    readonly_fields = ["total_gpus", "created_at", "updated_at"]
    inlines = [PoolCostRateInline, OpenIncidentInline]
    actions = ["mark_draining", "mark_active"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "slug",
                    "name",
                    "region",
                    "gpu_model",
                    "tier",
                    "recall_notice_hours",
                    "status",
                    "external_id",
                ]
            },
        ),
        (
            "Size",
            {
                "fields": [
                    "gpus_per_node",
                    "node_count",
                    "total_gpus",
                    "reserved_gpus",
                    "allow_partial_nodes",
                ]
            },
        ),
        (
            "Contract",
            {
                "fields": [
                    "available_from",
                    "available_until",
                    "currency",
                    "cost_per_gpu_hour",
                ]
            },
        ),
        ("Record", {"fields": ["created_at", "updated_at"]}),
    ]

    def get_inlines(self, request, obj: CapacityPool | None):
        return [*POOL_INLINES, *self.inlines]

    def perform_save(self, request, form: CapacityPoolForm, change: bool) -> CapacityPool:
        if not change:  # a new pool starts its cost history
            return services.pool_create(pool=form.instance)
        changes = {
            name: form.cleaned_data[name] for name in form.changed_data if name in form.cleaned_data
        }
        return services.pool_update(pool=form.instance, **changes)

    @admin.action(description="Stop selling (draining): existing reservations stay")
    def mark_draining(self, request, queryset) -> None:
        for pool in queryset:
            services.pool_update(pool=pool, status=CapacityPool.Status.DRAINING)
        self.message_user(request, f"{queryset.count()} pool(s) now draining.")

    @admin.action(description="Resume selling (active)")
    def mark_active(self, request, queryset) -> None:
        for pool in queryset:
            services.pool_update(pool=pool, status=CapacityPool.Status.ACTIVE)
        self.message_user(request, f"{queryset.count()} pool(s) now active.")


@admin.register(PoolHour)
class PoolHourAdmin(admin.ModelAdmin):
    """The capacity ledger, read-only: it is written by bookings and capacity changes only."""

    list_display = ["pool", "hour", "capacity", "booked", "free", "excess"]
    list_filter = ["pool__gpu_model", "pool"]
    list_select_related = ["pool"]
    date_hierarchy = "hour"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
