"""The events and webhooks API: the tenant's events (a cursor over its sequence), its webhook
endpoints, and what was delivered to them.

Every endpoint is tenant-scoped: it needs a tenant API key, reads through the caller's tenant
and answers 404 for another tenant's ids. Views parse, call a selector or a service, and
render; the rules live in ``events.services``."""

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from core.api.permissions import SCOPE_ADMIN, TENANT_PERMISSIONS, request_tenant_id
from core.api.schema import TENANT_AUTH_ERRORS, error_responses
from events import selectors, services
from events.api.serializers import (
    EventListQuerySerializer,
    EventPageSerializer,
    EventSerializer,
    WebhookDeliveryDetailSerializer,
    WebhookDeliveryListQuerySerializer,
    WebhookDeliverySerializer,
    WebhookEndpointCreateSerializer,
    WebhookEndpointRotatedSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointUpdateSerializer,
    WebhookEndpointWithSecretSerializer,
)
from events.models import Delivery, WebhookEndpoint

EVENTS_SCHEMA = {"auth": [{"bearerAuth": []}], "tags": ["events"]}
WEBHOOKS_SCHEMA = {"auth": [{"bearerAuth": []}], "tags": ["webhooks"]}
EVENT_ID = OpenApiParameter(
    "event_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="Event id (`evt_...`)."
)
ENDPOINT_ID = OpenApiParameter(
    "endpoint_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="Webhook endpoint id."
)
DELIVERY_ID = OpenApiParameter(
    "delivery_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="Webhook delivery id."
)
ENDPOINT_INPUT_ERRORS = ("validation_error", "parse_error", "url_not_allowed", "unknown_event_type")


# --- events ------------------------------------------------------------------------------------


class EventListApi(APIView):
    permission_classes = TENANT_PERMISSIONS

    InputSerializer = EventListQuerySerializer
    OutputSerializer = EventPageSerializer

    @extend_schema(
        operation_id="event_list",
        summary="List the tenant's events",
        description="The caller's events in `sequence` order, oldest first, at most `limit` "
        "per page. To read on, follow `next` (the same query with `after` = the last id of "
        "the page) while `has_more` is true; to wait for new events, poll with `after` = the "
        "last id you have. Events are kept for "
        f"{settings.EVENTS_RETENTION_DAYS} days, then deleted: a cursor naming a deleted event "
        "is a 400 `invalid_cursor`; start again without `after`.",
        parameters=[EventListQuerySerializer],
        responses={
            200: EventPageSerializer,
            **error_responses("validation_error", "invalid_cursor", *TENANT_AUTH_ERRORS),
        },
        **EVENTS_SCHEMA,
    )
    def get(self, request: Request) -> Response:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        query = params.validated_data
        tenant_id = request_tenant_id(request)
        after_sequence = None
        if "after" in query:
            after_sequence = selectors.event_cursor_sequence(
                tenant_id=tenant_id, event_id=query["after"]
            )
        limit = query["limit"]
        events = list(
            selectors.event_list(
                tenant_id=tenant_id, type=query.get("type"), after_sequence=after_sequence
            )[: limit + 1]
        )
        has_more = len(events) > limit
        events = events[:limit]
        next_url = None
        if has_more:
            next_url = replace_query_param(request.build_absolute_uri(), "after", events[-1].id)
        page = {"results": events, "has_more": has_more, "next": next_url}
        return Response(self.OutputSerializer(page).data)


class EventDetailApi(APIView):
    permission_classes = TENANT_PERMISSIONS

    OutputSerializer = EventSerializer

    @extend_schema(
        operation_id="event_retrieve",
        summary="Get one event",
        parameters=[EVENT_ID],
        responses={200: EventSerializer, **error_responses("not_found", *TENANT_AUTH_ERRORS)},
        **EVENTS_SCHEMA,
    )
    def get(self, request: Request, event_id: str) -> Response:
        event = selectors.event_get(tenant_id=request_tenant_id(request), event_id=event_id)
        return Response(self.OutputSerializer(event).data)


# --- webhook endpoints -------------------------------------------------------------------------


class EndpointListCreateApi(GenericAPIView):
    permission_classes = TENANT_PERMISSIONS
    required_scopes = {"POST": SCOPE_ADMIN}
    filter_backends = []
    serializer_class = WebhookEndpointCreateSerializer

    InputSerializer = WebhookEndpointCreateSerializer
    OutputSerializer = WebhookEndpointSerializer
    CreatedSerializer = WebhookEndpointWithSecretSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no tenant
            return WebhookEndpoint.objects.none()
        return selectors.endpoint_list(tenant_id=request_tenant_id(self.request))

    @extend_schema(
        operation_id="webhook_endpoint_list",
        summary="List the tenant's webhook endpoints",
        description="Oldest first, without their secrets. Paginated with `page` and `page_size`.",
        responses={
            200: WebhookEndpointSerializer(many=True),
            **error_responses("not_found", *TENANT_AUTH_ERRORS),
        },
        **WEBHOOKS_SCHEMA,
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.OutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="webhook_endpoint_create",
        summary="Add a webhook endpoint",
        description="Every event of the chosen types (all when `event_types` is empty) is "
        "POSTed to `url`, signed as Standard Webhooks specify (`webhook-id`, "
        "`webhook-timestamp`, `webhook-signature`), and retried for about three days until "
        "the endpoint answers 2xx. The response holds the signing `secret`: it is not shown "
        "again (rotate it to get a new one).",
        request=WebhookEndpointCreateSerializer,
        responses={
            201: WebhookEndpointWithSecretSerializer,
            **error_responses(*ENDPOINT_INPUT_ERRORS, *TENANT_AUTH_ERRORS),
        },
        **WEBHOOKS_SCHEMA,
    )
    def post(self, request: Request) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint = services.endpoint_create(
            tenant_id=request_tenant_id(request), **body.validated_data
        )
        return Response(self.CreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class EndpointDetailApi(APIView):
    permission_classes = TENANT_PERMISSIONS
    required_scopes = {"PATCH": SCOPE_ADMIN, "DELETE": SCOPE_ADMIN}

    InputSerializer = WebhookEndpointUpdateSerializer
    OutputSerializer = WebhookEndpointSerializer

    @extend_schema(
        operation_id="webhook_endpoint_retrieve",
        summary="Get one webhook endpoint",
        description="Without its secret.",
        parameters=[ENDPOINT_ID],
        responses={
            200: WebhookEndpointSerializer,
            **error_responses("not_found", *TENANT_AUTH_ERRORS),
        },
        **WEBHOOKS_SCHEMA,
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = services.endpoint_get(
            tenant_id=request_tenant_id(request), endpoint_id=endpoint_id
        )
        return Response(self.OutputSerializer(endpoint).data)

    @extend_schema(
        operation_id="webhook_endpoint_update",
        summary="Change a webhook endpoint",
        description="Changes only the fields given. `enabled: false` stops its deliveries "
        "(they wait, pending); `enabled: true` clears `disabled_reason` and the failure "
        "streak, so an endpoint disabled for failing or answering 410 can be turned back on.",
        parameters=[ENDPOINT_ID],
        request=WebhookEndpointUpdateSerializer,
        responses={
            200: WebhookEndpointSerializer,
            **error_responses(
                *ENDPOINT_INPUT_ERRORS,
                "not_found",
                "endpoint_disabled_by_operator",
                *TENANT_AUTH_ERRORS,
            ),
        },
        **WEBHOOKS_SCHEMA,
    )
    def patch(self, request: Request, endpoint_id: str) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint = services.endpoint_update(
            tenant_id=request_tenant_id(request), endpoint_id=endpoint_id, **body.validated_data
        )
        return Response(self.OutputSerializer(endpoint).data)

    @extend_schema(
        operation_id="webhook_endpoint_delete",
        summary="Delete a webhook endpoint",
        description="With its deliveries: nothing more is sent to it.",
        parameters=[ENDPOINT_ID],
        responses={204: None, **error_responses("not_found", *TENANT_AUTH_ERRORS)},
        **WEBHOOKS_SCHEMA,
    )
    def delete(self, request: Request, endpoint_id: str) -> Response:
        services.endpoint_delete(tenant_id=request_tenant_id(request), endpoint_id=endpoint_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointRotateSecretApi(APIView):
    permission_classes = TENANT_PERMISSIONS
    required_scopes = {"POST": SCOPE_ADMIN}

    OutputSerializer = WebhookEndpointRotatedSerializer

    @extend_schema(
        operation_id="webhook_endpoint_rotate_secret",
        summary="Rotate a webhook endpoint's secret",
        description="A new secret signs every delivery from now on, returned here once. Until "
        "`previous_secret_expires_at` deliveries also carry a signature made with the previous "
        "secret, so the receiver can switch over without rejecting a message.",
        parameters=[ENDPOINT_ID],
        request=None,
        responses={
            200: WebhookEndpointRotatedSerializer,
            **error_responses("not_found", *TENANT_AUTH_ERRORS),
        },
        **WEBHOOKS_SCHEMA,
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        endpoint = services.endpoint_rotate_secret(
            tenant_id=request_tenant_id(request), endpoint_id=endpoint_id
        )
        return Response(self.OutputSerializer(endpoint).data)


# --- deliveries --------------------------------------------------------------------------------


class EndpointDeliveryListApi(GenericAPIView):
    permission_classes = TENANT_PERMISSIONS
    filter_backends = []
    serializer_class = WebhookDeliverySerializer

    InputSerializer = WebhookDeliveryListQuerySerializer
    OutputSerializer = WebhookDeliverySerializer

    def get_queryset(self):
        # Asked by schema generation only: get() lists the deliveries of one endpoint.
        return Delivery.objects.none()

    @extend_schema(
        operation_id="webhook_delivery_list",
        summary="List an endpoint's deliveries",
        description="Newest first, one per event sent (or to be sent) to the endpoint, with "
        "where its retries stand. Paginated with `page` and `page_size`.",
        parameters=[ENDPOINT_ID, WebhookDeliveryListQuerySerializer],
        responses={
            200: WebhookDeliverySerializer(many=True),
            **error_responses("validation_error", "not_found", *TENANT_AUTH_ERRORS),
        },
        **WEBHOOKS_SCHEMA,
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        tenant_id = request_tenant_id(request)
        endpoint = services.endpoint_get(tenant_id=tenant_id, endpoint_id=endpoint_id)
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        deliveries = selectors.delivery_list(
            tenant_id=tenant_id, endpoint_id=endpoint.pk, status=params.validated_data.get("status")
        )
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response(self.OutputSerializer(page, many=True).data)


class DeliveryDetailApi(APIView):
    permission_classes = TENANT_PERMISSIONS

    OutputSerializer = WebhookDeliveryDetailSerializer

    @extend_schema(
        operation_id="webhook_delivery_retrieve",
        summary="Get one delivery with its attempts",
        description="Every HTTP request made for it: when, what the endpoint answered (status "
        "and the first 500 characters of the body) or why nothing came back, and how long it "
        "took.",
        parameters=[DELIVERY_ID],
        responses={
            200: WebhookDeliveryDetailSerializer,
            **error_responses("not_found", *TENANT_AUTH_ERRORS),
        },
        **WEBHOOKS_SCHEMA,
    )
    def get(self, request: Request, delivery_id: str) -> Response:
        delivery = selectors.delivery_get(
            tenant_id=request_tenant_id(request), delivery_id=delivery_id
        )
        return Response(self.OutputSerializer(delivery).data)
