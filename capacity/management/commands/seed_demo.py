"""Load the demo catalogue (and, when the other apps provide them, demo tenants and about
three months of demo history). Idempotent: rows are keyed by slug, and the history is created
once, so running it again changes nothing."""

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from capacity import demo, services
from capacity.models import CapacityPool, GpuModel, Provider, Region


class Command(BaseCommand):
    help = (
        "Load demo providers, regions, GPU models and capacity pools with their list prices "
        "(idempotent)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--operator",
            action="store_true",
            help="Also create the operator login 'operator' (password from "
            "DEMO_OPERATOR_PASSWORD, default 'operator-demo') and print it.",
        )
        parser.add_argument(
            "--no-history",
            action="store_true",
            help="Only the catalogue and the demo tenant: no tenants with three months of "
            "bookings, invoices and webhook deliveries.",
        )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        providers = {}
        for slug, name, kind, website in demo.PROVIDERS:
            providers[slug], _ = Provider.objects.update_or_create(
                slug=slug, defaults={"name": name, "kind": kind, "website": website}
            )
        regions = {}
        for provider, code, name, country in demo.REGIONS:
            regions[(provider, code)], _ = Region.objects.update_or_create(
                provider=providers[provider],
                code=code,
                defaults={"name": name, "country": country},
            )
        models = {}
        for slug, vendor, name, memory, interconnect, arch in demo.GPU_MODELS:
            models[slug], _ = GpuModel.objects.update_or_create(
                slug=slug,
                defaults={
                    "vendor": vendor,
                    "name": name,
                    "memory_gb": memory,
                    "interconnect": interconnect,
                    "architecture": arch,
                },
            )
        created_pools = created_prices = 0
        for row in demo.POOLS:
            slug, provider, region, gpu_model = row[:4]
            pool = CapacityPool.objects.filter(slug=slug).first()
            if pool is None:
                pool = services.pool_create(
                    pool=CapacityPool(
                        slug=slug,
                        region=regions[(provider, region)],
                        gpu_model=models[gpu_model],
                        name=slug.replace("-", " ").upper(),
                        **demo.pool_defaults(row),
                    )
                )
                created_pools += 1
            created_prices += self._seed_prices(pool, demo.pool_prices(row))
        self.stdout.write(
            f"Catalogue: {Provider.objects.count()} providers, {Region.objects.count()} regions, "
            f"{GpuModel.objects.count()} GPU models, {CapacityPool.objects.count()} pools "
            f"({created_pools} new), {created_prices} new list prices."
        )
        self._seed_other_apps("seed_demo")
        if not options["no_history"]:
            self._seed_other_apps("seed_demo_history")
        if options["operator"]:
            self._operator()

    @staticmethod
    def _seed_prices(pool: CapacityPool, prices: dict) -> int:
        """The pool's list prices in the marketplace's price book, through the pools' reverse
        relation ``prices`` (capacity does not import the marketplace). Prices already in the
        book are left as they are. Returns how many were added."""
        book = getattr(pool, "prices", None)
        if book is None:  # the marketplace is not installed
            return 0
        created = 0
        for currency, price in prices.items():
            _, new = book.get_or_create(currency=currency, defaults={"price_per_gpu_hour": price})
            created += new
        return created

    def _seed_other_apps(self, hook: str) -> None:
        """Demo data of the other apps, when they are installed (capacity does not import
        them): each app's ``hook`` (``seed_demo``, then ``seed_demo_history``), in
        INSTALLED_APPS order."""
        from django.apps import apps

        for config in apps.get_app_configs():
            seed = getattr(config, hook, None)
            if seed is not None:
                for line in seed():
                    self.stdout.write(line)

    def _operator(self) -> None:
        password = os.environ.get("DEMO_OPERATOR_PASSWORD", "operator-demo")
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username="operator", defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(password)
            user.save()
            self.stdout.write(f"Operator login: operator / {password}")
        else:
            self.stdout.write("Operator login: operator (already exists; password unchanged)")
