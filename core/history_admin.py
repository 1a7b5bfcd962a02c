"""The admin's History page for audited models (``core.history``): every change with its date,
who made it (the operator, or the tenant's API key) and what changed, field by field."""

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from simple_history.admin import SimpleHistoryAdmin


class HistoryAdmin(SimpleHistoryAdmin):
    """Base ModelAdmin of an audited model: its History page lists the model's historical rows.

    The history is read-only: simple-history's "revert to this version" would write the old
    values back with a plain form save, around the services and their checks, so it is off
    (no button, and a POST to a version's page is refused). Mixins that change how the admin
    writes (``core.admin.ServiceFormAdminMixin``, read-only mixins) go before it in the bases:
    ``class PoolAdmin(ServiceFormAdminMixin, HistoryAdmin)``."""

    object_history_list_template = "core/history_list.html"

    def revert_disabled(self, request: HttpRequest, obj=None) -> bool:
        return True

    def history_form_view(
        self, request: HttpRequest, object_id, version_id, extra_context=None
    ) -> HttpResponse:
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        return super().history_form_view(request, object_id, version_id, extra_context)
