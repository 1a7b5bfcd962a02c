from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core import health

admin.site.site_header = "GPU Marketplace operations"
admin.site.site_title = "GPU Marketplace"

# Under /api/ errors are JSON like every API answer (core/api/fallback.py).
handler400 = "core.api.fallback.bad_request"
handler403 = "core.api.fallback.permission_denied"
handler404 = "core.api.fallback.not_found"
handler500 = "core.api.fallback.server_error"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/", include("capacity.api.urls")),
    path("api/v1/", include("marketplace.api.urls")),
    path("api/v1/", include("billing.api.urls")),
    path("api/v1/", include("events.api.urls")),
]
