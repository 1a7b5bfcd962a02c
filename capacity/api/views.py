"""Read-only catalogue API for any authenticated caller (tenant API key or operator session)."""

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from capacity.api import serializers
from capacity.api.filters import PoolFilter, RegionFilter
from capacity.models import CapacityPool, GpuModel, Provider, Region
from capacity.selectors import pool_catalogue, pool_catalogue_entry
from core.api.serializers import represent


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
    """The catalogue. A tenant sees each pool's list price in its own billing currency (null
    where the pool is not sold in it); an operator session sees it in the pool's own currency."""

    serializer_class = serializers.PoolSerializer
    lookup_field = "slug"
    filterset_class = PoolFilter
    ordering_fields = ["slug", "price_per_gpu_hour", "available_from", "node_count"]

    def _currency(self) -> str | None:
        tenant = getattr(self.request.user, "tenant", None)
        return tenant.currency if tenant is not None else None

    def get_queryset(self) -> QuerySet[CapacityPool]:
        return pool_catalogue(self._currency())

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(represent(self.get_serializer_class(), self.get_object()))

    def get_object(self) -> CapacityPool:
        # One pool by its slug: the filters and ordering are the list's.
        pool = pool_catalogue_entry(self.kwargs[self.lookup_field], self._currency())
        if pool is None:
            raise Http404
        self.check_object_permissions(self.request, pool)
        return pool
