from capacity.models import PoolHour


class Dashboard(PoolHour):
    """Admin entry point for the operations dashboard (no table of its own: a proxy of the
    capacity ledger, which the dashboard reads most)."""

    class Meta:
        proxy = True
        verbose_name = "operations dashboard"
        verbose_name_plural = "operations dashboard"
        default_permissions = ("view",)
