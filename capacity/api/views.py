"""Read-only catalogue API for any authenticated caller (tenant API key or operator session)."""

from django.core.exceptions import FieldDoesNotExist
from django.db.models import CharField, DecimalField, F, OuterRef, QuerySet, Subquery, Value
from rest_framework import viewsets

from capacity.api import serializers
from capacity.api.filters import PoolFilter, RegionFilter
from capacity.models import CapacityPool, GpuModel, Provider, Region
from capacity.selectors import pool_list


class ProviderViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Provider.objects.all()
    serializer_class = serializers.ProviderSerializer
    lookup_field = "slug"
    filterset_fields = ["kind"]
    ordering_fields = ["name", "slug"]


class RegionViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Region.objects.select_related("provider")
    serializer_class = serializers.RegionSerializer
    filterset_class = RegionFilter
    ordering_fields = ["code", "name", "country"]


class GpuModelViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = GpuModel.objects.all()
    serializer_class = serializers.GpuModelSerializer
    lookup_field = "slug"
    filterset_fields = ["vendor"]
    ordering_fields = ["name", "memory_gb"]


def with_list_price(pools: QuerySet[CapacityPool], currency: str | None) -> QuerySet[CapacityPool]:
    """Annotate each pool's list price in ``currency`` (None: in the pool's own currency) as
    ``price_per_gpu_hour``, null where the price book has none, and that currency as
    ``price_currency``. The price book is the marketplace's (``PoolPrice``, the pools'
    ``prices``); it is read through that reverse relation, so capacity imports nothing of it."""
    wanted = Value(currency, output_field=CharField()) if currency else F("currency")
    try:
        book = CapacityPool._meta.get_field("prices").related_model
    except FieldDoesNotExist:  # the marketplace is not installed: no prices to show
        price = Value(None, output_field=DecimalField(max_digits=12, decimal_places=4))
    else:
        price = Subquery(
            book.objects.filter(
                pool=OuterRef("pk"), currency=currency or OuterRef("currency")
            ).values("price_per_gpu_hour")[:1]
        )
    return pools.annotate(price_per_gpu_hour=price, price_currency=wanted)


class PoolViewSet(viewsets.ReadOnlyModelViewSet):
    """The catalogue. A tenant sees each pool's list price in its own billing currency (null
    where the pool is not sold in it); an operator session sees it in the pool's own currency."""

    serializer_class = serializers.PoolSerializer
    lookup_field = "slug"
    filterset_class = PoolFilter
    ordering_fields = ["slug", "price_per_gpu_hour", "available_from", "node_count"]

    def get_queryset(self) -> QuerySet[CapacityPool]:
        tenant = getattr(self.request.user, "tenant", None)
        return with_list_price(pool_list(), tenant.currency if tenant is not None else None)
