from rest_framework import serializers

from capacity.models import CapacityPool, GpuModel, Provider, Region
from core.api.serializers import FieldsBuiltOnce
from core.money import CURRENCY_CHOICES


class ProviderSerializer(serializers.ModelSerializer):
    class Meta:
        model = Provider
        fields = ["id", "slug", "name", "kind", "website"]


class RegionSerializer(serializers.ModelSerializer):
    provider = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Region
        fields = ["id", "provider", "code", "name", "country"]


class GpuModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = GpuModel
        fields = ["id", "slug", "vendor", "name", "memory_gb", "interconnect", "architecture"]


class PoolSerializer(FieldsBuiltOnce, serializers.ModelSerializer):
    # Annotated by capacity.selectors.pool_catalogue / pool_catalogue_entry.
    provider = serializers.CharField(source="provider_slug", read_only=True)
    region = serializers.CharField(source="region_code", read_only=True)
    country = serializers.CharField(source="region_country", read_only=True)
    gpu_model = serializers.CharField(
        source="gpu_model_slug",
        read_only=True,
        help_text=GpuModel._meta.get_field("slug").help_text,
    )
    total_gpus = serializers.IntegerField(read_only=True)
    sellable_gpus = serializers.IntegerField(read_only=True)
    booking_step = serializers.IntegerField(read_only=True)
    recallable = serializers.BooleanField(
        read_only=True, help_text="Backup capacity the owner may recall with notice."
    )
    # From the price book (a pool has one list price per currency).
    price_per_gpu_hour = serializers.DecimalField(
        max_digits=12,
        decimal_places=4,
        read_only=True,
        allow_null=True,
        help_text="List price per GPU-hour in `currency`, before commitment and negotiated "
        "discounts; null when the pool is not sold in that currency (a tenant is offered only "
        "pools priced in its own currency).",
    )
    currency = serializers.ChoiceField(
        source="price_currency",
        choices=CURRENCY_CHOICES,
        read_only=True,
        help_text="The currency of `price_per_gpu_hour`: the calling tenant's billing currency; "
        "for an operator session (no tenant), the pool's own currency.",
    )

    class Meta:
        model = CapacityPool
        # cost_per_gpu_hour is what we pay the provider: operators see it in the admin only.
        fields = [
            "id",
            "slug",
            "name",
            "provider",
            "region",
            "country",
            "gpu_model",
            "gpus_per_node",
            "node_count",
            "total_gpus",
            "reserved_gpus",
            "sellable_gpus",
            "allow_partial_nodes",
            "booking_step",
            "available_from",
            "available_until",
            "currency",
            "price_per_gpu_hour",
            "tier",
            "recallable",
            "recall_notice_hours",
            "status",
        ]
