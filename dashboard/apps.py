from django.apps import AppConfig


class DashboardConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "dashboard"
    verbose_name = "Operations"

    def ready(self) -> None:
        from django.contrib import admin

        # The admin's home page links the dashboard first (dashboard/templates/dashboard/
        # admin_index.html extends the admin's own index).
        admin.site.index_template = "dashboard/admin_index.html"
