"""The booking API: search, earliest windows, quotes, reservations, cancel, extend, tenant,
and the tenant's API keys.

Every endpoint is tenant-scoped: it needs a tenant API key, reads through the caller's tenant
and answers 404 for another tenant's ids. Views parse, call a selector or a service, and
render; the rules live in ``marketplace.services.booking``."""

import functools
import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import serializers as drf_serializers
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.credit import credit_available
from capacity.models import GpuModel
from core.api.permissions import SCOPE_ADMIN, SCOPE_BOOK, TENANT_PERMISSIONS, request_tenant_id
from core.api.schema import TENANT_AUTH_ERRORS, error_responses
from core.errors import NotFound
from core.timeutils import ceil_hour, floor_hour, is_whole_hour, utcnow
from marketplace import selectors
from marketplace.api.filters import ReservationFilter
from marketplace.api.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    AvailabilityQuerySerializer,
    BookingRequestSerializer,
    CancelSerializer,
    CapacityOfferSerializer,
    EarliestQuerySerializer,
    ExtendSerializer,
    QuoteConfirmSerializer,
    ReservationSerializer,
    TenantSerializer,
    TenantSettingsSerializer,
    reservation_data,
)
from marketplace.errors import IdempotencyKeyInUse, InvalidWindow, UnknownGpuModel
from marketplace.models import ApiKey, Reservation, Tenant
from marketplace.services import booking
from marketplace.services.tenants import (
    api_key_create,
    api_key_list,
    api_key_revoke,
    tenant_settings_update,
)

IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
DEFAULT_SEARCH_SPAN = timedelta(days=30)

TENANT_SCHEMA = {"auth": [{"bearerAuth": []}], "tags": ["booking"]}
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Makes a retry safe: the same key with the same body returns the first "
    "outcome (same reservation, same status); the same key with another body is a 422 "
    "`idempotency_key_reused`; a retry while the first request with the key is still being "
    "processed is a 409 `idempotency_key_in_use` with `Retry-After` (retry then for the "
    "outcome). Printable ASCII, at most 200 characters, kept per tenant and operation for "
    "`IDEMPOTENCY_KEY_TTL_HOURS` (24 by default) after the first request, as "
    "`Idempotency-Key-Expires` says; after that the key counts as new.",
)
# Seconds a client should wait before retrying a request whose key is still in use.
IDEMPOTENCY_KEY_IN_USE_RETRY_AFTER = 1
RESERVATION_ID = OpenApiParameter(
    "reservation_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Reservation id."
)


def _replayed_header(status_code: int) -> OpenApiParameter:
    return OpenApiParameter(
        "Idempotent-Replayed",
        str,
        OpenApiParameter.HEADER,
        enum=["true"],
        response=[status_code],
        description="`true` when this response replays an earlier request made with the same "
        "Idempotency-Key; absent otherwise.",
    )


def _expires_header(status_code: int) -> OpenApiParameter:
    return OpenApiParameter(
        "Idempotency-Key-Expires",
        OpenApiTypes.DATETIME,
        OpenApiParameter.HEADER,
        response=[status_code],
        description="When a request was sent with an Idempotency-Key: until when (RFC 3339, "
        "UTC) the key is remembered, i.e. `IDEMPOTENCY_KEY_TTL_HOURS` after its first "
        "request. A retry before then replays this outcome; from then on the key counts as "
        "new. Absent without an Idempotency-Key.",
    )


def _idempotency_headers(status_code: int) -> list[OpenApiParameter]:
    return [IDEMPOTENCY_KEY, _replayed_header(status_code), _expires_header(status_code)]


def _in_use(view):
    """409 ``idempotency_key_in_use`` in the one error shape, plus ``Retry-After``."""

    @functools.wraps(view)
    def post(self, request: Request, *args, **kwargs) -> Response:
        try:
            return view(self, request, *args, **kwargs)
        except IdempotencyKeyInUse as exc:
            response = self.handle_exception(exc)
            response["Retry-After"] = str(IDEMPOTENCY_KEY_IN_USE_RETRY_AFTER)
            return response

    return post


def _tenant(request: Request) -> Tenant:
    return request.user.tenant


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None or not key.strip():
        return None
    key = key.strip()
    if not IDEMPOTENCY_KEY_PATTERN.match(key):
        raise drf_serializers.ValidationError(
            {"Idempotency-Key": ["Use 1-200 printable ASCII characters without spaces."]},
            code="invalid",
        )
    return key


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _written(outcome: tuple[Reservation, bool], status_code: int) -> Response:
    """The reservation as written; a replay answers with the same status as the first call
    (the status is the operation's: 201 for a new quote or reservation, 200 for an extension).
    Under an Idempotency-Key, ``Idempotency-Key-Expires`` says until when it is remembered."""
    reservation, replayed = outcome
    response = Response(reservation_data(reservation), status=status_code)
    if replayed:
        response["Idempotent-Replayed"] = "true"
    expires_at = getattr(outcome, "key_expires_at", None)
    if expires_at is not None:
        response["Idempotency-Key-Expires"] = (
            expires_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        )
    return response


def _booking_request(data: Mapping) -> booking.BookingRequest:
    return booking.BookingRequest(
        gpu_model=data["gpu_model"],
        gpu_count=data["gpu_count"],
        start=data["start"],
        end=data["end"],
        region=data.get("region"),
        provider=data.get("provider"),
        tier=data.get("tier"),
        pool=data.get("pool"),
        max_unit_price=data.get("max_unit_price"),
    )


def _criteria(data: Mapping) -> selectors.PoolFilter:
    return selectors.PoolFilter(
        gpu_model=data["gpu_model"],
        region=data.get("region"),
        provider=data.get("provider"),
        tier=data.get("tier"),
    )


def _require_gpu_model(slug: str) -> None:
    # The booking services answer unknown_gpu_model; the searches should too, not "nothing".
    if not GpuModel.objects.filter(slug=slug).exists():
        raise UnknownGpuModel(
            f"Unknown GPU model {slug!r}.",
            fields={"gpu_model": [{"code": "unknown", "message": "Unknown GPU model."}]},
        )


def _window_error(field: str, code: str, message: str, detail: str) -> InvalidWindow:
    return InvalidWindow(detail, fields={field: [{"code": code, "message": message}]})


def _search_span(
    *, not_before: datetime | None, not_after: datetime | None, duration_hours: int
) -> tuple[datetime, datetime]:
    """The [not_before, not_after] span to search, defaulted and capped at the horizon."""
    now = utcnow()
    for name, value in (("not_before", not_before), ("not_after", not_after)):
        if value is not None and not is_whole_hour(value):
            raise _window_error(
                name,
                "not_whole_hour",
                "Must fall on a whole hour.",
                f"{name} must fall on a whole UTC hour (minutes and seconds zero).",
            )
    duration = timedelta(hours=duration_hours)
    start = not_before or ceil_hour(now)
    if start < floor_hour(now):
        raise _window_error(
            "not_before", "in_past", "Must not be in the past.", "not_before is in the past."
        )
    horizon = floor_hour(now + timedelta(days=settings.BOOKING_HORIZON_DAYS))
    end = min(not_after or start + max(DEFAULT_SEARCH_SPAN, duration), horizon)
    if start + duration > horizon:
        raise _window_error(
            "not_before",
            "beyond_horizon",
            "Too far ahead.",
            f"Bookings reach at most {settings.BOOKING_HORIZON_DAYS} days ahead.",
        )
    if end - start < duration:
        raise _window_error(
            "not_after",
            "too_short",
            "Leaves less than duration_hours after not_before.",
            "The span from not_before to not_after is shorter than duration_hours.",
        )
    return start, end


class AvailabilityApi(APIView):
    permission_classes = TENANT_PERMISSIONS

    InputSerializer = AvailabilityQuerySerializer
    OutputSerializer = CapacityOfferSerializer

    @extend_schema(
        operation_id="availability_search",
        summary="Search capacity for a window",
        description="Every active pool priced in the tenant's currency that can take "
        "`gpu_count` GPUs for the whole of [start, end), with the GPUs it has free and the price "
        "this tenant would pay, in its currency; cheapest first, primary before backup at equal "
        "price. Not paginated: one offer per pool.",
        parameters=[AvailabilityQuerySerializer],
        responses={
            200: CapacityOfferSerializer(many=True),
            **error_responses(
                "validation_error", "invalid_window", "unknown_gpu_model", *TENANT_AUTH_ERRORS
            ),
        },
        **TENANT_SCHEMA,
    )
    def get(self, request: Request) -> Response:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        booking.validate_window(data["start"], data["end"])
        _require_gpu_model(data["gpu_model"])
        offers = selectors.availability_search(
            tenant=_tenant(request),
            criteria=_criteria(data),
            gpu_count=data["gpu_count"],
            start=data["start"],
            end=data["end"],
            max_unit_price=data.get("max_unit_price"),
        )
        return Response(self.OutputSerializer(offers, many=True).data)


class EarliestWindowsApi(APIView):
    permission_classes = TENANT_PERMISSIONS

    InputSerializer = EarliestQuerySerializer
    OutputSerializer = CapacityOfferSerializer

    @extend_schema(
        operation_id="availability_earliest",
        summary="Find the earliest windows",
        description="The earliest start on each pool priced in the tenant's currency where "
        "`gpu_count` GPUs are free for "
        "`duration_hours` consecutive hours between `not_before` and `not_after`; earliest "
        "first, then cheapest, at most `limit` (default 5, one window per pool). The span is "
        "capped at the booking horizon. Not paginated.",
        parameters=[EarliestQuerySerializer],
        responses={
            200: CapacityOfferSerializer(many=True),
            **error_responses(
                "validation_error", "invalid_window", "unknown_gpu_model", *TENANT_AUTH_ERRORS
            ),
        },
        **TENANT_SCHEMA,
    )
    def get(self, request: Request) -> Response:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        not_before, not_after = _search_span(
            not_before=data.get("not_before"),
            not_after=data.get("not_after"),
            duration_hours=data["duration_hours"],
        )
        _require_gpu_model(data["gpu_model"])
        windows = selectors.earliest_windows(
            tenant=_tenant(request),
            criteria=_criteria(data),
            gpu_count=data["gpu_count"],
            duration_hours=data["duration_hours"],
            not_before=not_before,
            not_after=not_after,
            limit=data["limit"],
            max_unit_price=data.get("max_unit_price"),
        )
        return Response(self.OutputSerializer(windows, many=True).data)


BOOKING_ERRORS = (
    "validation_error",
    "parse_error",
    "invalid_window",
    "unknown_gpu_model",
    "invalid_gpu_count",
    "credit_limit_exceeded",
    "quota_exceeded",
    "no_matching_pool",
    "insufficient_capacity",
    "idempotency_key_reused",
    "idempotency_key_in_use",
    *TENANT_AUTH_ERRORS,
)


class QuoteCreateApi(APIView):
    permission_classes = TENANT_PERMISSIONS
    required_scopes = {"POST": SCOPE_BOOK}

    InputSerializer = BookingRequestSerializer
    OutputSerializer = ReservationSerializer

    @extend_schema(
        operation_id="quote_create",
        summary="Quote and hold capacity",
        description="Places the booking on the cheapest pool that fits (primary before backup "
        "at equal price) and holds the capacity until `expires_at` (10 minutes by default, never "
        "after the window's start). Only windows that start later can be quoted; book the hour "
        'in progress directly. Confirm it with `POST /api/v1/reservations/ {"quote": id}` before '
        "then (from `expires_at` on it is `quote_expired`); a held quote cannot fail for lack of "
        "capacity.",
        request=BookingRequestSerializer,
        parameters=_idempotency_headers(201),
        responses={201: ReservationSerializer, **error_responses(*BOOKING_ERRORS)},
        **TENANT_SCHEMA,
    )
    @_in_use
    def post(self, request: Request) -> Response:
        key = _idempotency_key(request)
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        booking_request = _booking_request(body.validated_data)
        outcome = booking.quote_create(
            tenant=_tenant(request),
            request=booking_request,
            idempotency_key=key,
            fingerprint=booking_request.fingerprint(),
        )
        return _written(outcome, status.HTTP_201_CREATED)


class ReservationListCreateApi(GenericAPIView):
    permission_classes = TENANT_PERMISSIONS
    required_scopes = {"POST": SCOPE_BOOK}
    filterset_class = ReservationFilter
    ordering_fields = ["start", "end", "created_at", "gpu_count", "total_price"]
    ordering = ["-created_at"]
    # Only the browsable API (DEBUG) uses it, to prefill its raw POST form with a booking.
    serializer_class = BookingRequestSerializer

    OutputSerializer = ReservationSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no tenant
            return Reservation.objects.none()
        return selectors.reservation_list(tenant=_tenant(self.request))

    @extend_schema(
        operation_id="reservation_list",
        summary="List the tenant's reservations",
        description="The caller's own reservations and quotes (never another tenant's), newest "
        "first unless `ordering` says otherwise. Paginated with `page` and `page_size`.",
        responses={
            200: ReservationSerializer(many=True),
            **error_responses("validation_error", "not_found", *TENANT_AUTH_ERRORS),
        },
        **TENANT_SCHEMA,
    )
    def get(self, request: Request) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(self.OutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="reservation_create",
        summary="Reserve (confirm a quote or book at once)",
        description='Either `{"quote": id}` to confirm a held quote, or a full booking '
        "request to book and confirm at once on the cheapest pool that fits. 201 with the "
        "confirmed reservation.",
        request=PolymorphicProxySerializer(
            component_name="ReservationCreate",  # "...Request" in the schema
            serializers=[QuoteConfirmSerializer, BookingRequestSerializer],
            resource_type_field_name=None,
        ),
        parameters=_idempotency_headers(201),
        responses={
            201: ReservationSerializer,
            **error_responses(*BOOKING_ERRORS, "not_found", "invalid_state", "quote_expired"),
        },
        examples=[
            OpenApiExample(
                "Confirm a quote",
                value={"quote": "3f1c9f5e-7c55-4d5e-9a76-0d2b8f0e7a11"},
                request_only=True,
            ),
            OpenApiExample(
                "Book at once",
                value={
                    "gpu_model": "h100-sxm-80gb",
                    "gpu_count": 64,
                    "start": "2026-12-07T09:00:00Z",
                    "end": "2026-12-10T09:00:00Z",
                    "region": "us-east-1",
                },
                request_only=True,
            ),
        ],
        **TENANT_SCHEMA,
    )
    @_in_use
    def post(self, request: Request) -> Response:
        key = _idempotency_key(request)
        tenant = _tenant(request)
        if isinstance(request.data, Mapping) and "quote" in request.data:
            body = QuoteConfirmSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            quote_id = body.validated_data["quote"]
            outcome = booking.quote_confirm(
                tenant=tenant,
                quote_id=quote_id,
                idempotency_key=key,
                fingerprint=_sha256(f"quote:{quote_id}"),
            )
        else:
            body = BookingRequestSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            booking_request = _booking_request(body.validated_data)
            outcome = booking.reservation_create(
                tenant=tenant,
                request=booking_request,
                idempotency_key=key,
                fingerprint=booking_request.fingerprint(),
            )
        return _written(outcome, status.HTTP_201_CREATED)


class ReservationDetailApi(APIView):
    permission_classes = TENANT_PERMISSIONS

    OutputSerializer = ReservationSerializer

    @extend_schema(
        operation_id="reservation_retrieve",
        summary="Get one reservation",
        parameters=[RESERVATION_ID],
        responses={200: ReservationSerializer, **error_responses("not_found", *TENANT_AUTH_ERRORS)},
        **TENANT_SCHEMA,
    )
    def get(self, request: Request, reservation_id: str) -> Response:
        try:
            reservation = selectors.reservation_get(
                tenant=_tenant(request), reservation_id=reservation_id
            )
        except (Reservation.DoesNotExist, DjangoValidationError, ValueError):
            raise NotFound("No such reservation.") from None
        return Response(self.OutputSerializer(reservation).data)


class ReservationCancelApi(APIView):
    permission_classes = TENANT_PERMISSIONS
    required_scopes = {"POST": SCOPE_BOOK}

    InputSerializer = CancelSerializer
    OutputSerializer = ReservationSerializer

    @extend_schema(
        operation_id="reservation_cancel",
        summary="Cancel a reservation",
        description="Releases the capacity from the next whole hour at once. Hours already "
        "begun are charged; the hours given back cost the fee of the cancellation policy "
        "(by default free with 24 hours' notice, 50 % later). Cancelling a held quote is "
        "free. Cancelling twice returns the cancelled reservation unchanged.",
        parameters=[RESERVATION_ID],
        request=CancelSerializer,
        responses={
            200: ReservationSerializer,
            **error_responses(
                "validation_error", "parse_error", "not_found", "invalid_state", *TENANT_AUTH_ERRORS
            ),
        },
        **TENANT_SCHEMA,
    )
    def post(self, request: Request, reservation_id: str) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        reservation = booking.reservation_cancel(
            tenant=_tenant(request),
            reservation_id=reservation_id,
            cancelled_by=request.user.username,
            reason=body.validated_data["reason"],
        )
        return Response(self.OutputSerializer(reservation).data)


class ReservationExtendApi(APIView):
    permission_classes = TENANT_PERMISSIONS
    required_scopes = {"POST": SCOPE_BOOK}

    InputSerializer = ExtendSerializer
    OutputSerializer = ReservationSerializer

    @extend_schema(
        operation_id="reservation_extend",
        summary="Extend a reservation",
        description="Moves `end` later on the same pool at the locked unit price, atomically: "
        "either every added hour fits or nothing changes (409 `insufficient_capacity`). Quotas "
        "and credit apply to the added hours.",
        parameters=[RESERVATION_ID, *_idempotency_headers(200)],
        request=ExtendSerializer,
        responses={
            200: ReservationSerializer,
            **error_responses(
                "validation_error",
                "parse_error",
                "invalid_window",
                "credit_limit_exceeded",
                "quota_exceeded",
                "not_found",
                "insufficient_capacity",
                "invalid_state",
                "idempotency_key_reused",
                "idempotency_key_in_use",
                *TENANT_AUTH_ERRORS,
            ),
        },
        **TENANT_SCHEMA,
    )
    @_in_use
    def post(self, request: Request, reservation_id: str) -> Response:
        key = _idempotency_key(request)
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        new_end = body.validated_data["end"]
        outcome = booking.reservation_extend(
            tenant=_tenant(request),
            reservation_id=reservation_id,
            new_end=new_end,
            idempotency_key=key,
            fingerprint=_sha256(f"extend:{reservation_id}:{new_end.isoformat()}"),
        )
        return _written(outcome, status.HTTP_200_OK)


class TenantApi(APIView):
    permission_classes = TENANT_PERMISSIONS
    required_scopes = {"PATCH": SCOPE_ADMIN}

    OutputSerializer = TenantSerializer

    @extend_schema(
        operation_id="tenant_retrieve",
        summary="The caller's tenant",
        description="Name, status, credit and quotas of the tenant that owns the API key.",
        responses={200: TenantSerializer, **error_responses(*TENANT_AUTH_ERRORS)},
        **TENANT_SCHEMA,
    )
    def get(self, request: Request) -> Response:
        tenant = _tenant(request)
        data = {
            "name": tenant.name,
            "slug": tenant.slug,
            "status": tenant.status,
            "currency": tenant.currency,
            "credit_limit": tenant.credit_limit,
            "credit_available": credit_available(tenant=tenant),
            "discount_percent": tenant.discount_percent,
            "quotas": {
                "max_gpus": tenant.max_gpus,
                "max_reservation_hours": tenant.max_reservation_hours,
            },
            "api_key_prefix": request.auth.prefix,
            "ending_soon_lead_minutes": int(tenant.ending_soon_lead.total_seconds() // 60),
            "low_balance_threshold": tenant.low_balance_threshold,
        }
        return Response(self.OutputSerializer(data).data, status=status.HTTP_200_OK)

    @extend_schema(
        operation_id="tenant_settings_update",
        summary="Change the caller's notification settings",
        description="The lead time of `reservation.ending_soon` and the threshold of "
        "`balance.low` (see /api/v1/events/). Send only the fields that change.",
        request=TenantSettingsSerializer,
        responses={
            200: TenantSerializer,
            **error_responses(*TENANT_AUTH_ERRORS, "validation_error", "parse_error"),
        },
        **TENANT_SCHEMA,
    )
    def patch(self, request: Request) -> Response:
        serializer = TenantSettingsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        if "ending_soon_lead_minutes" in changes:
            changes["ending_soon_lead"] = timedelta(minutes=changes.pop("ending_soon_lead_minutes"))
        request.user.tenant = tenant_settings_update(tenant=_tenant(request), **changes)
        return self.get(request)


KEYS_SCHEMA = {"auth": [{"bearerAuth": []}], "tags": ["api-keys"]}
API_KEY_ID = OpenApiParameter(
    "key_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="API key id."
)
ADMIN_ONLY = dict.fromkeys(("GET", "HEAD", "OPTIONS", "POST", "DELETE"), SCOPE_ADMIN)


def _key_data(key: ApiKey) -> dict:
    return {
        "id": key.pk,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": key.scopes,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
    }


class ApiKeyListCreateApi(GenericAPIView):
    """The tenant's own API keys. Managing keys needs a key with the ``admin`` scope."""

    permission_classes = TENANT_PERMISSIONS
    required_scopes = ADMIN_ONLY
    filter_backends = []
    serializer_class = ApiKeyCreateSerializer

    InputSerializer = ApiKeyCreateSerializer
    OutputSerializer = ApiKeySerializer
    CreatedSerializer = ApiKeyCreatedSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no tenant
            return ApiKey.objects.none()
        return api_key_list(tenant_id=request_tenant_id(self.request))

    @extend_schema(
        operation_id="api_key_list",
        summary="List the tenant's API keys",
        description="Newest first, revoked and expired keys included; never a secret (it is "
        "shown once, when the key is created). Needs the `admin` scope. Paginated with `page` "
        "and `page_size`.",
        responses={200: ApiKeySerializer(many=True), **error_responses(*TENANT_AUTH_ERRORS)},
        **KEYS_SCHEMA,
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(
            self.OutputSerializer([_key_data(key) for key in page], many=True).data
        )

    @extend_schema(
        operation_id="api_key_create",
        summary="Create an API key",
        description="A new key of the caller's tenant with the given `scopes` and, optionally, "
        "an expiry. The response holds the secret `key`: it is not shown again. Needs the "
        "`admin` scope.",
        request=ApiKeyCreateSerializer,
        responses={
            201: ApiKeyCreatedSerializer,
            **error_responses("validation_error", "parse_error", *TENANT_AUTH_ERRORS),
        },
        **KEYS_SCHEMA,
    )
    def post(self, request: Request) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        key, raw_key = api_key_create(
            tenant=_tenant(request),
            name=data["name"],
            scopes=data["scopes"],
            expires_at=data.get("expires_at"),
        )
        return Response(
            self.CreatedSerializer({**_key_data(key), "key": raw_key}).data,
            status=status.HTTP_201_CREATED,
        )


class ApiKeyDetailApi(APIView):
    permission_classes = TENANT_PERMISSIONS
    required_scopes = ADMIN_ONLY

    @extend_schema(
        operation_id="api_key_revoke",
        summary="Revoke an API key",
        description="The key stops working at once (401 `invalid_api_key` from its next "
        "request on) and stays listed with `revoked_at`. Revoking a revoked key is a no-op. "
        "The tenant's last active key with the `admin` scope cannot be revoked (409 "
        "`last_admin_key`): create another admin key first. Needs the `admin` scope.",
        parameters=[API_KEY_ID],
        responses={
            204: None,
            **error_responses("not_found", "last_admin_key", *TENANT_AUTH_ERRORS),
        },
        **KEYS_SCHEMA,
    )
    def delete(self, request: Request, key_id: str) -> Response:
        api_key_revoke(tenant=_tenant(request), key_id=key_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
