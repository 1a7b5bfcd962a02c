import django_filters

from capacity.models import CapacityPool, Region


class RegionFilter(django_filters.FilterSet):
    provider = django_filters.CharFilter(field_name="provider__slug")
    country = django_filters.CharFilter(field_name="country", lookup_expr="iexact")

    class Meta:
        model = Region
        fields = ["provider", "country"]


class PoolFilter(django_filters.FilterSet):
    provider = django_filters.CharFilter(
        field_name="region__provider__slug", help_text="Provider slug."
    )
    region = django_filters.CharFilter(field_name="region__code", help_text="Region code.")
    country = django_filters.CharFilter(field_name="region__country", lookup_expr="iexact")
    gpu_model = django_filters.CharFilter(field_name="gpu_model__slug", help_text="GPU model slug.")
    tier = django_filters.ChoiceFilter(choices=CapacityPool.Tier.choices)
    status = django_filters.ChoiceFilter(choices=CapacityPool.Status.choices)

    class Meta:
        model = CapacityPool
        fields = ["provider", "region", "country", "gpu_model", "tier", "status"]
