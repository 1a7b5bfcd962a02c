"""Shapes of the booking API: what comes in (query strings and bodies) and what goes out.

No rules live here beyond the shape of a value; the services decide what a booking may be."""

from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers
from rest_framework.settings import ISO_8601

from capacity.models import CapacityPool
from core.api.permissions import SCOPES
from core.api.serializers import FieldsBuiltOnce, JsonInputSerializer, represent
from core.timeutils import offset_in_use, utcnow
from marketplace.models import Reservation
from marketplace.selectors import Window

MAX_GPU_COUNT = 100_000


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 with a UTC offset (``Z``, ``+00:00`` or any other), returned in UTC.

    A time without an offset is refused rather than guessed: every time in this API is UTC."""

    default_error_messages = {
        "naive": "Give a UTC offset, e.g. 2026-12-07T09:00:00Z.",
        "invalid_offset": "A UTC offset is between -14:00 and +14:00.",
    }

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("input_formats", [ISO_8601])
        kwargs.setdefault("default_timezone", UTC)
        super().__init__(**kwargs)

    def to_internal_value(self, value) -> datetime:
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value)
            except ValueError:
                parsed = None  # well-formed but impossible: the parent says "invalid"
            if parsed is not None and parsed.tzinfo is None:
                self.fail("naive")
            if parsed is not None and not offset_in_use(parsed):
                self.fail("invalid_offset")
        elif isinstance(value, datetime) and value.tzinfo is None:
            self.fail("naive")
        return super().to_internal_value(value)


def gpu_count_field(**kwargs) -> serializers.IntegerField:
    return serializers.IntegerField(
        min_value=1,
        max_value=MAX_GPU_COUNT,
        help_text="How many GPUs, for every hour of the window.",
        **kwargs,
    )


def max_unit_price_field() -> serializers.DecimalField:
    return serializers.DecimalField(
        max_digits=12,
        decimal_places=4,
        min_value=Decimal(0),
        required=False,
        help_text="Only pools whose unit price (after discounts) is at most this, per GPU-hour, "
        "in the tenant's currency.",
    )


class PoolCriteriaSerializer(JsonInputSerializer):
    """What to book and where: the GPU model plus optional location filters."""

    gpu_model = serializers.CharField(
        max_length=50, help_text="GPU model slug, e.g. h100-sxm-80gb (see /api/v1/gpu-models/)."
    )
    gpu_count = gpu_count_field()
    region = serializers.CharField(
        max_length=50, required=False, help_text="Region code, e.g. us-east-1."
    )
    provider = serializers.CharField(
        max_length=50, required=False, help_text="Provider slug, e.g. aws."
    )
    tier = serializers.ChoiceField(
        choices=CapacityPool.Tier.choices,
        required=False,
        help_text="primary or backup capacity.",
    )
    max_unit_price = max_unit_price_field()


class AvailabilityQuerySerializer(PoolCriteriaSerializer):
    start = AwareDateTimeField(help_text="Window start, a whole UTC hour (ISO 8601 with offset).")
    end = AwareDateTimeField(help_text="Window end (exclusive), a whole UTC hour.")


class EarliestQuerySerializer(PoolCriteriaSerializer):
    duration_hours = serializers.IntegerField(
        min_value=1, help_text="Length of the booking in whole hours."
    )
    not_before = AwareDateTimeField(
        required=False,
        help_text="Earliest start, a whole UTC hour. Default: the next whole hour.",
    )
    not_after = AwareDateTimeField(
        required=False,
        help_text="Latest end, a whole UTC hour. Default: not_before + 30 days (or + "
        "duration_hours when longer); capped at the booking horizon.",
    )
    limit = serializers.IntegerField(
        min_value=1, max_value=50, default=5, help_text="How many windows at most (1-50)."
    )

    def validate_duration_hours(self, value: int) -> int:
        if value > settings.BOOKING_MAX_HOURS:
            raise serializers.ValidationError(
                f"Ensure this value is less than or equal to {settings.BOOKING_MAX_HOURS}.",
                code="max_value",
            )
        return value


# Named "BookingRequest" in the schema (request components get the suffix), not
# "BookingRequestRequest".
@extend_schema_serializer(component_name="Booking")
class BookingRequestSerializer(PoolCriteriaSerializer):
    """A booking request: placed on the cheapest pool that fits (primary before backup at
    equal price)."""

    start = AwareDateTimeField(help_text="First hour, a whole UTC hour (ISO 8601 with offset).")
    end = AwareDateTimeField(help_text="End (exclusive), a whole UTC hour.")
    pool = serializers.CharField(
        max_length=100, required=False, help_text="Pin the booking to this pool slug."
    )


BOOKING_FIELDS = frozenset(BookingRequestSerializer().fields)


class QuoteConfirmSerializer(JsonInputSerializer):
    """Confirm a held quote."""

    quote = serializers.UUIDField(help_text="The id of a held quote (POST /api/v1/quotes/).")

    def validate(self, attrs: dict) -> dict:
        mixed = sorted(BOOKING_FIELDS & set(self.initial_data))
        if mixed:
            raise serializers.ValidationError(
                {name: ["Give either a quote or a booking request, not both."] for name in mixed},
                code="quote_with_booking",
            )
        return attrs


class CancelSerializer(JsonInputSerializer):
    reason = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default="", help_text="Why (optional)."
    )


class ExtendSerializer(JsonInputSerializer):
    end = AwareDateTimeField(help_text="The new end, a whole UTC hour after the current end.")


class PlacementSerializer(serializers.Serializer):
    """Where the reservation's GPUs are for [start, end)."""

    pool = serializers.CharField(source="pool.slug", help_text="Pool slug.")
    region = serializers.CharField(source="pool.region.code", help_text="Region code.")
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    gpus = serializers.IntegerField()
    incident = serializers.IntegerField(
        source="incident_id",
        allow_null=True,
        help_text="The incident that moved these GPUs here; null for the booking's own pool.",
    )


class InterruptionSerializer(serializers.Serializer):
    """GPU-hours an incident took away and nothing could replace: not delivered, not billed."""

    incident = serializers.IntegerField(source="incident_id")
    kind = serializers.CharField(source="incident.kind", help_text="outage, recall, ...")
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    gpus = serializers.IntegerField(source="gpus_lost", help_text="GPUs lost in each hour.")
    gpu_hours = serializers.IntegerField(source="gpu_hours_lost")


class CancellationTermSerializer(serializers.Serializer):
    """One step of a reservation's cancellation schedule."""

    min_notice_hours = serializers.IntegerField(
        help_text="Applies when cancelling at least this many whole hours before the start."
    )
    fee_percent = serializers.DecimalField(
        max_digits=5,
        decimal_places=2,
        help_text="Fee, in percent of the price of the GPU-hours given back.",
    )


class ReservationSerializer(FieldsBuiltOnce, serializers.ModelSerializer):
    """A reservation or a quote (a reservation in status ``held`` with an ``expires_at``).

    ``placements`` say where its GPUs run (an incident may have moved some hours to other
    pools at the same price); ``interruptions`` list what incidents took away."""

    pool = serializers.CharField(source="pool.slug", help_text="Pool slug.")
    provider = serializers.CharField(source="pool.region.provider.slug", help_text="Provider.")
    region = serializers.CharField(source="pool.region.code", help_text="Region code.")
    gpu_model = serializers.CharField(source="pool.gpu_model.slug", help_text="GPU model slug.")
    hours = serializers.IntegerField(help_text="end - start, in hours.")
    expires_at = serializers.DateTimeField(
        source="hold_expires_at",
        allow_null=True,
        help_text="When a held quote lapses (never after start); null once confirmed.",
    )
    recallable = serializers.BooleanField(
        source="pool.recallable",
        help_text="Backup capacity: the owner may recall it with `recall_notice_hours` notice.",
    )
    recall_notice_hours = serializers.IntegerField(source="pool.recall_notice_hours")
    placements = PlacementSerializer(many=True, read_only=True)
    interruptions = serializers.SerializerMethodField()
    commitment_percent = serializers.DecimalField(
        max_digits=5,
        decimal_places=2,
        read_only=True,
        help_text="The commitment discount (percent) in force when it was booked, already in "
        "unit_price; an extension keeps it.",
    )
    cancellation_terms = CancellationTermSerializer(
        many=True,
        read_only=True,
        help_text="The cancellation schedule in force when it was booked, largest notice first: "
        "cancelling with at least min_notice_hours' notice costs fee_percent of the GPU-hours "
        "given back (the step with the largest notice met applies; none met: free). Later "
        "policy changes apply to new bookings only.",
    )

    class Meta:
        model = Reservation
        fields = [
            "id",
            "status",
            "pool",
            "provider",
            "region",
            "gpu_model",
            "gpu_count",
            "start",
            "end",
            "hours",
            "unit_price",
            "list_price_per_gpu_hour",
            "total_price",
            "charge",
            "cancellation_fee",
            "commitment_percent",
            "cancellation_terms",
            "currency",
            "expires_at",
            "created_at",
            "updated_at",
            "confirmed_at",
            "cancelled_at",
            "cancelled_by",
            "cancellation_reason",
            "recallable",
            "recall_notice_hours",
            "placements",
            "interruptions",
        ]
        read_only_fields = fields

    @extend_schema_field(InterruptionSerializer(many=True))
    def get_interruptions(self, reservation: Reservation) -> list[dict]:
        lost = [d for d in reservation.displacements.all() if d.gpus_lost]
        return InterruptionSerializer(lost, many=True).data


def reservation_data(reservation: Reservation) -> dict:
    """The reservation as the API shows it (``ReservationSerializer``): a write's response and
    its event's ``data``."""
    return represent(ReservationSerializer, reservation)


class CapacityOfferSerializer(serializers.Serializer):
    """A pool that can take the whole booking in [start, end), with its price."""

    pool = serializers.CharField(source="pool.slug", help_text="Pool slug (pin it with `pool`).")
    provider = serializers.CharField(source="pool.region.provider.slug")
    region = serializers.CharField(source="pool.region.code")
    country = serializers.CharField(source="pool.region.country", help_text="ISO 3166-1 alpha-2.")
    gpu_model = serializers.CharField(source="pool.gpu_model.slug")
    tier = serializers.ChoiceField(source="pool.tier", choices=CapacityPool.Tier.choices)
    recallable = serializers.BooleanField(
        source="pool.recallable",
        help_text="Backup capacity: the owner may recall it with `recall_notice_hours` notice.",
    )
    recall_notice_hours = serializers.IntegerField(source="pool.recall_notice_hours")
    available_gpus = serializers.IntegerField(
        help_text="The fewest free GPUs in any hour of the window."
    )
    unit_price = serializers.DecimalField(
        max_digits=12, decimal_places=4, help_text="Per GPU-hour, after discounts."
    )
    total_price = serializers.DecimalField(
        max_digits=14, decimal_places=2, help_text="unit_price x gpu_count x hours."
    )
    currency = serializers.CharField(
        help_text="The tenant's billing currency: only pools priced in it are offered."
    )
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    hours = serializers.SerializerMethodField()

    def get_hours(self, window: Window) -> int:
        return int((window.end - window.start).total_seconds() // 3600)


class QuotasSerializer(serializers.Serializer):
    max_gpus = serializers.IntegerField(help_text="Most GPUs held at any one time.")
    max_reservation_hours = serializers.IntegerField(help_text="Longest single reservation.")


class TenantSerializer(serializers.Serializer):
    name = serializers.CharField()
    slug = serializers.CharField()
    status = serializers.CharField()
    currency = serializers.CharField(
        help_text="The billing currency: every price, balance and invoice is in it, and only "
        "pools priced in it are offered. Fixed once the tenant has history."
    )
    credit_limit = serializers.DecimalField(max_digits=14, decimal_places=2)
    credit_available = serializers.DecimalField(
        max_digits=16,
        decimal_places=2,
        help_text="What new bookings may still cost before tax (see /api/v1/balance/).",
    )
    discount_percent = serializers.DecimalField(max_digits=5, decimal_places=2)
    quotas = QuotasSerializer()
    api_key_prefix = serializers.CharField(help_text="The prefix of the key used for this call.")
    ending_soon_lead_minutes = serializers.IntegerField(
        help_text="reservation.ending_soon is sent this many minutes before a reservation ends."
    )
    low_balance_threshold = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        allow_null=True,
        help_text="balance.low is sent when credit_available falls below this; null: never.",
    )


class TenantSettingsSerializer(JsonInputSerializer):
    """The tenant's own notification settings (PATCH: send only what changes)."""

    ending_soon_lead_minutes = serializers.IntegerField(
        min_value=0,
        max_value=7 * 24 * 60,
        required=False,
        help_text="0 to 10080 (a week).",
    )
    low_balance_threshold = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        min_value=0,
        allow_null=True,
        required=False,
        help_text="In the tenant's currency; null turns the alert off.",
    )


SCOPE_HELP = (
    "What the key may do: `read` (every GET), `book` (quotes and reservation changes), `admin` "
    "(API keys, webhook endpoints, tenant settings)."
)


class ApiKeySerializer(serializers.Serializer):
    """An API key as listed: never its secret nor its digest."""

    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField()
    prefix = serializers.CharField(
        help_text="Visible part of the key (`gpum_<prefix>_...`): identifies it in lists and logs."
    )
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=SCOPES), help_text=SCOPE_HELP
    )
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(
        allow_null=True, help_text="Last request made with it (updated at most once a minute)."
    )
    expires_at = serializers.DateTimeField(
        allow_null=True, help_text="The key stops working then; null: never."
    )
    revoked_at = serializers.DateTimeField(
        allow_null=True, help_text="When it was revoked; null: it was not."
    )


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(
        help_text="The secret key, to send as `Authorization: Bearer <key>`. Shown only in this "
        "response: store it now."
    )


class ApiKeyCreateSerializer(JsonInputSerializer):
    name = serializers.CharField(max_length=100, help_text="A label for people, e.g. `ci`.")
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=SCOPES),
        min_length=1,
        help_text=SCOPE_HELP + " At least one.",
    )
    expires_at = AwareDateTimeField(
        required=False,
        allow_null=True,
        help_text="When the key stops working (in the future); omitted or null: never.",
    )

    def validate_expires_at(self, value: datetime | None) -> datetime | None:
        if value is not None and value <= utcnow():
            raise serializers.ValidationError("Must be in the future.", code="in_past")
        return value
