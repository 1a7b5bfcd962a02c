"""Shapes of the events and webhooks API: query strings and bodies in, events, endpoints and
deliveries out. The rules (which URLs and event types an endpoint may have) live in
``events.services``; the secret of an endpoint is only ever part of the create and
rotate-secret responses."""

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers

from core.api.serializers import JsonInputSerializer
from events.models import Delivery, WebhookEndpoint
from events.services import DESCRIPTION_MAX_LENGTH
from events.types import EVENT_TYPES

EVENT_TYPE_NAMES = sorted(EVENT_TYPES)
EVENTS_MAX_LIMIT = 500
EVENTS_DEFAULT_LIMIT = 50


class NamedEnumField:
    """A string field documented as a named enum component of the OpenAPI schema. The
    generator would otherwise name enums after field names, and "type" and "status" already
    name other enums (reservations, invoices)."""

    enum_name: str
    enum_values: list[str]


class NamedEnumFieldSchema(OpenApiSerializerFieldExtension):
    target_class = NamedEnumField
    match_subclasses = True

    def get_name(self) -> str:
        return self.target.enum_name

    def map_serializer_field(self, auto_schema, direction) -> dict:
        return {"type": "string", "enum": list(self.target.enum_values)}


class EventTypeField(NamedEnumField, serializers.CharField):
    """An event type by name. Input is checked by the services, which answer
    `unknown_event_type` with every valid type."""

    enum_name = "EventType"
    enum_values = EVENT_TYPE_NAMES

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("max_length", 60)
        super().__init__(**kwargs)


class DeliveryStatusField(NamedEnumField, serializers.ChoiceField):
    enum_name = "WebhookDeliveryStatus"
    enum_values = list(Delivery.Status.values)

    def __init__(self, **kwargs) -> None:
        super().__init__(choices=Delivery.Status.choices, **kwargs)


# --- events ------------------------------------------------------------------------------------


class EventListQuerySerializer(serializers.Serializer):
    type = serializers.ChoiceField(
        choices=EVENT_TYPE_NAMES,
        required=False,
        help_text="Only events of this type.",
        error_messages={
            "invalid_choice": 'Unknown event type "{input}". Valid types: '
            + ", ".join(EVENT_TYPE_NAMES)
            + "."
        },
    )
    after = serializers.CharField(
        required=False,
        help_text="An event id (the last one you have): only events after it, in sequence "
        "order. Unknown, pruned or another tenant's ids are a 400 `invalid_cursor`.",
    )
    limit = serializers.IntegerField(
        min_value=1,
        max_value=EVENTS_MAX_LIMIT,
        default=EVENTS_DEFAULT_LIMIT,
        help_text=f"How many events at most (1-{EVENTS_MAX_LIMIT}, default "
        f"{EVENTS_DEFAULT_LIMIT}).",
    )


class EventSerializer(serializers.Serializer):
    """Something that happened to one of the tenant's resources. Webhooks carry the same
    `type` and `data`, with the id in the `webhook-id` header."""

    id = serializers.CharField(help_text="`evt_` + a ULID; the `webhook-id` of its deliveries.")
    type = EventTypeField(help_text="What happened.")
    sequence = serializers.IntegerField(
        help_text="Strictly increasing per tenant, in commit order: order events by it."
    )
    created_at = serializers.DateTimeField()
    data = serializers.JSONField(help_text="The resource as the API showed it at that moment.")


class EventPageSerializer(serializers.Serializer):
    results = EventSerializer(many=True)
    has_more = serializers.BooleanField(help_text="More events follow this page.")
    next = serializers.URLField(
        allow_null=True,
        help_text="The URL of the next page (`after` = the last id of this page); null when "
        "there is none yet. Poll it later to receive new events.",
    )


# --- webhook endpoints -------------------------------------------------------------------------


def _event_types_field(**kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=EventTypeField(),
        max_length=len(EVENT_TYPES),
        help_text="Event types sent to this endpoint; empty means every type.",
        **kwargs,
    )


class WebhookEndpointCreateSerializer(JsonInputSerializer):
    url = serializers.URLField(
        max_length=2000,
        help_text="Where deliveries are POSTed. https, resolving to public addresses only.",
    )
    description = serializers.CharField(
        max_length=DESCRIPTION_MAX_LENGTH, required=False, allow_blank=True, default=""
    )
    event_types = _event_types_field(required=False, default=list)


class WebhookEndpointUpdateSerializer(JsonInputSerializer):
    """Only the fields given change. Enabling an endpoint clears why it was disabled and its
    failure streak; disabling it stops its deliveries (they wait, pending)."""

    url = serializers.URLField(max_length=2000, required=False)
    description = serializers.CharField(
        max_length=DESCRIPTION_MAX_LENGTH, required=False, allow_blank=True
    )
    event_types = _event_types_field(required=False)
    enabled = serializers.BooleanField(required=False)


class WebhookEndpointSerializer(serializers.ModelSerializer):
    """A tenant's webhook endpoint. The signing secret is shown only when it is made (create
    and rotate-secret)."""

    event_types = serializers.ListField(
        child=EventTypeField(),
        read_only=True,
        help_text="Event types sent here; empty means every type.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "enabled",
            "disabled_reason",
            "disabled_at",
            "failing_since",
            "last_success_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "disabled_reason": {"help_text": "Why it is disabled; empty while enabled."},
        }


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        help_text="Signs every delivery (Standard Webhooks, `whsec_...`). Shown only now: store it."
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookEndpointRotatedSerializer(WebhookEndpointWithSecretSerializer):
    previous_secret_expires_at = serializers.DateTimeField(
        help_text="Until then deliveries carry a signature with the previous secret too, so "
        "receivers can switch without losing a message."
    )

    class Meta(WebhookEndpointWithSecretSerializer.Meta):
        fields = [*WebhookEndpointWithSecretSerializer.Meta.fields, "previous_secret_expires_at"]
        read_only_fields = fields


# --- deliveries --------------------------------------------------------------------------------


class WebhookDeliveryListQuerySerializer(serializers.Serializer):
    status = DeliveryStatusField(required=False, help_text="Only deliveries in this status.")


class WebhookDeliveryAttemptSerializer(serializers.Serializer):
    attempted_at = serializers.DateTimeField()
    status_code = serializers.IntegerField(
        allow_null=True, help_text="The endpoint's HTTP status; null when none came back."
    )
    duration_ms = serializers.IntegerField()
    response_body = serializers.CharField(help_text="The first 500 characters of the answer.")
    error = serializers.CharField(help_text="Why no answer came back (timeout, refused ...).")


class WebhookDeliverySerializer(serializers.Serializer):
    """One event sent to one endpoint, retried until the endpoint answers 2xx or the retry
    schedule (about three days) runs out."""

    id = serializers.IntegerField()
    event = serializers.CharField(source="event_id", help_text="The event id (`webhook-id`).")
    event_type = EventTypeField()
    endpoint = serializers.IntegerField(source="endpoint_id", help_text="The endpoint id.")
    status = DeliveryStatusField()
    attempts = serializers.IntegerField(help_text="HTTP requests made so far.")
    next_attempt_at = serializers.DateTimeField(
        allow_null=True, help_text="When it is sent (again) while pending."
    )
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)


class WebhookDeliveryDetailSerializer(WebhookDeliverySerializer):
    attempts_made = WebhookDeliveryAttemptSerializer(
        many=True, help_text="Every HTTP request made, oldest first."
    )
