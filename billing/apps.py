from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def seed_demo_history(self) -> list[str]:
        """About three months of demo history for ``manage.py seed_demo`` (``billing/demo.py``:
        tenants, bookings, incidents, invoices, payments, webhooks), created once. Returns the
        lines to print."""
        from billing.demo import history_seed

        return history_seed()
