from datetime import UTC, datetime
from decimal import Decimal

import factory

from capacity.models import CapacityPool, GpuModel, Provider, Region


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
    price_per_gpu_hour = Decimal("3.0000")
    tier = CapacityPool.Tier.PRIMARY
    status = CapacityPool.Status.ACTIVE


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "marketplace.Tenant"

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant-{n}")
    credit_limit = Decimal("1000000.00")
    max_gpus = 100000
    max_reservation_hours = 2160
