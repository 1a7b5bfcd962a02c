from decimal import Decimal

from django.apps import AppConfig

DEMO_TENANT_NAME = "Demo Labs"
DEMO_TENANT_SLUG = "demo-labs"
DEMO_CREDIT_LIMIT = Decimal("250000.00")


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    verbose_name = "Marketplace (demand)"

    def seed_demo(self) -> list[str]:
        """Demo tenant for ``manage.py seed_demo`` (idempotent). Returns the lines to print;
        the API key is printed only when the tenant is created, since only its digest is kept."""
        from marketplace.models import Tenant
        from marketplace.services.tenants import api_key_create, tenant_create

        if Tenant.objects.filter(slug=DEMO_TENANT_SLUG).exists():
            return [
                f"Demo tenant {DEMO_TENANT_NAME} ({DEMO_TENANT_SLUG}) already exists; its API key "
                "was printed when it was created. For a new key use the admin action "
                "'Create an API key', or `python manage.py create_tenant NAME` for a new tenant."
            ]
        tenant = tenant_create(
            name=DEMO_TENANT_NAME, slug=DEMO_TENANT_SLUG, credit_limit=DEMO_CREDIT_LIMIT
        )
        _, raw_key = api_key_create(tenant=tenant)
        return [
            f"Demo tenant: {tenant.name} ({tenant.slug}), credit limit "
            f"{tenant.credit_limit} {tenant.currency}.",
            f"Demo tenant API key: {raw_key}",
        ]
