"""Read-only catalogue API for any authenticated caller (tenant API key or operator session)."""

from rest_framework import viewsets

from capacity.api import serializers
from capacity.api.filters import PoolFilter, RegionFilter
from capacity.models import GpuModel, Provider, Region
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


class PoolViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = pool_list()
    serializer_class = serializers.PoolSerializer
    lookup_field = "slug"
    filterset_class = PoolFilter
    ordering_fields = ["slug", "price_per_gpu_hour", "available_from", "node_count"]
