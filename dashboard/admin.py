"""The operations dashboard in the admin: its page (the proxy model's changelist), the pool and
tenant pages and the outlook CSV, all behind ``admin_site.admin_view`` (staff) and the view
permission of ``dashboard.Dashboard`` (superusers have it)."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import path

from dashboard import views
from dashboard.models import Dashboard


@admin.register(Dashboard)
class DashboardAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_urls(self):
        def guarded(view):
            def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
                if not self.has_view_permission(request):
                    raise PermissionDenied
                return view(request, *args, extra=self._context(request), **kwargs)

            return self.admin_site.admin_view(wrapper)

        return [
            path("pool/<int:pool_id>/", guarded(views.pool_view), name="dashboard_pool"),
            path("tenant/<int:tenant_id>/", guarded(views.tenant_view), name="dashboard_tenant"),
            path(
                "csv/outlook/",
                guarded(lambda request, extra: views.outlook_csv_view(request)),
                name="dashboard_outlook_csv",
            ),
            *super().get_urls(),
        ]

    def _context(self, request: HttpRequest) -> dict:
        return {**self.admin_site.each_context(request), "opts": self.model._meta}

    def changelist_view(self, request: HttpRequest, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return views.dashboard_view(request, self._context(request))
