from datetime import UTC, datetime
from decimal import Decimal

import factory

from capacity.models import CapacityPool, GpuModel, PoolCostRate, Provider, Region


class ProviderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Provider
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Provider {n}")
    slug = factory.Sequence(lambda n: f"provider-{n}")
    kind = Provider.Kind.HYPERSCALER


class RegionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Region

    provider = factory.SubFactory(ProviderFactory)
    code = factory.Sequence(lambda n: f"region-{n}")
    name = factory.Sequence(lambda n: f"Region {n}")
    country = "US"


class GpuModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GpuModel
        django_get_or_create = ("slug",)

    slug = "h100-sxm-80gb"
    vendor = GpuModel.Vendor.NVIDIA
    name = factory.LazyAttribute(lambda o: o.slug.upper())
    memory_gb = 80
    interconnect = "NVLink 4"


class CapacityPoolFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CapacityPool

    slug = factory.Sequence(lambda n: f"pool-{n}")
    region = factory.SubFactory(RegionFactory)
    gpu_model = factory.SubFactory(GpuModelFactory)
    gpus_per_node = 8
    node_count = 4
    reserved_gpus = 0
    available_from = datetime(2026, 1, 1, tzinfo=UTC)
    available_until = datetime(2028, 1, 1, tzinfo=UTC)
    cost_per_gpu_hour = Decimal("2.0000")
    tier = CapacityPool.Tier.PRIMARY
    status = CapacityPool.Status.ACTIVE
    # Not pool fields: the price book (``marketplace.PoolPrice``) and the cost history. The
    # pool is priced at ``price_per_gpu_hour`` in its own currency (None: not at all), plus
    # ``prices`` ({currency: price}); its cost is in force from the start of its contract.
    price_per_gpu_hour = Decimal("3.0000")
    prices = None

    @classmethod
    def _build(cls, model_class, *args, **kwargs):
        kwargs.pop("price_per_gpu_hour")
        kwargs.pop("prices")
        return super()._build(model_class, *args, **kwargs)

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        from marketplace.models import PoolPrice

        price = kwargs.pop("price_per_gpu_hour")
        prices = kwargs.pop("prices") or {}
        pool = super()._create(model_class, *args, **kwargs)
        book = {pool.currency: price} if price is not None else {}
        book.update(prices)
        PoolPrice.objects.bulk_create(
            PoolPrice(pool=pool, currency=currency, price_per_gpu_hour=Decimal(str(value)))
            for currency, value in book.items()
        )
        PoolCostRate.objects.create(
            pool=pool,
            effective_from=pool.available_from,
            cost_per_gpu_hour=Decimal(str(pool.cost_per_gpu_hour)),
        )
        return pool


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "marketplace.Tenant"

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant-{n}")
    credit_limit = Decimal("1000000.00")
    max_gpus = 100000
    max_reservation_hours = 2160
