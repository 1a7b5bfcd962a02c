"""Tenant billing API, read-only: invoices, usage, balance. Every view is scoped to the
caller's tenant (``request.user.tenant``): another tenant's invoice is a 404, never a 403.
Invoices are issued by the billing runs, so there are no write endpoints (405)."""

from datetime import UTC, date, datetime, time, timedelta

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors
from billing.api.serializers import (
    BalanceSerializer,
    InvoiceDetailSerializer,
    InvoiceSerializer,
    UsageRowSerializer,
)
from billing.models import Invoice, UsageRecord
from core.api.filters import BooleanFilter
from core.api.permissions import TENANT_PERMISSIONS
from core.api.schema import TENANT_AUTH_ERRORS, error_responses
from core.timeutils import utcnow

USAGE_MAX_DAYS = 366


class InvoiceFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Invoice.Status.choices)
    currency = django_filters.CharFilter()
    overdue = BooleanFilter(
        help_text="true: only invoices past their due date with something still due."
    )

    class Meta:
        model = Invoice
        fields = ["status", "currency", "overdue"]


@extend_schema(
    tags=["billing"],
    summary="List the tenant's invoices",
    description="Newest month first; drafts (the current month, and the last one during its "
    "grace period) included, with provisional totals. An issued invoice is due by `due_at` "
    "(the tenant's payment terms, net 30 by default) and `overdue` once that has passed with "
    "`amount_due` left; a prepaid top-up settles unpaid invoices, oldest due date first.",
    responses={
        200: InvoiceSerializer(many=True),
        **error_responses(*TENANT_AUTH_ERRORS, "validation_error"),
    },
)
class InvoiceListApi(generics.ListAPIView):
    permission_classes = TENANT_PERMISSIONS
    serializer_class = InvoiceSerializer
    filterset_class = InvoiceFilter
    ordering_fields = ["period_start", "total"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no tenant
            return Invoice.objects.none()
        return selectors.invoice_list(tenant=self.request.user.tenant)


@extend_schema(
    tags=["billing"],
    summary="One invoice with its lines and credit notes",
    responses={
        200: InvoiceDetailSerializer,
        **error_responses(*TENANT_AUTH_ERRORS, "not_found"),
    },
)
class InvoiceDetailApi(generics.RetrieveAPIView):
    permission_classes = TENANT_PERMISSIONS
    serializer_class = InvoiceDetailSerializer
    filter_backends = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Invoice.objects.none()
        return selectors.invoice_list(tenant=self.request.user.tenant).prefetch_related(
            "lines", "credit_notes"
        )


class UsageQuerySerializer(serializers.Serializer):
    """``from`` and ``to`` are UTC days, both included."""

    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            "from": serializers.DateField(required=False),
            "to": serializers.DateField(required=False),
        }

    def validate(self, attrs: dict) -> dict:
        today = utcnow().date()
        first = attrs.get("from") or today.replace(day=1)
        last = attrs.get("to") or max(today, first)
        if last < first:
            raise serializers.ValidationError({"to": "Must not be before from."})
        if (last - first).days >= USAGE_MAX_DAYS:
            raise serializers.ValidationError({"to": f"At most {USAGE_MAX_DAYS} days at once."})
        return {"from": first, "to": last}


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


@extend_schema(
    tags=["billing"],
    summary="Metered usage per reservation and UTC day",
    description="GPU-hours and metered amounts (four decimals) per reservation and day, for "
    "the days from `from` to `to` (both included; default: this month so far; at most 366 "
    "days). Invoices round each line, so sums of these rows may differ from invoice lines by "
    "less than a cent per line.",
    parameters=[
        OpenApiParameter("from", OpenApiTypes.DATE, description="First UTC day (included)."),
        OpenApiParameter("to", OpenApiTypes.DATE, description="Last UTC day (included)."),
    ],
    responses={
        200: UsageRowSerializer(many=True),
        **error_responses(*TENANT_AUTH_ERRORS, "validation_error"),
    },
)
class UsageApi(generics.ListAPIView):
    permission_classes = TENANT_PERMISSIONS
    serializer_class = UsageRowSerializer
    filter_backends = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return UsageRecord.objects.none()
        query = UsageQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        return selectors.usage_by_reservation_and_day(
            tenant=self.request.user.tenant,
            start=_day_start(query.validated_data["from"]),
            end=_day_start(query.validated_data["to"]) + timedelta(days=1),
        )


class BalanceApi(APIView):
    permission_classes = TENANT_PERMISSIONS

    @extend_schema(
        tags=["billing"],
        summary="The tenant's balance and available credit",
        description="The figures the booking credit check uses: a booking is accepted while "
        "its price fits in `credit_available`.",
        responses={200: BalanceSerializer, **error_responses(*TENANT_AUTH_ERRORS)},
    )
    def get(self, request: Request) -> Response:
        balance = selectors.balance_get(tenant=request.user.tenant)
        return Response(BalanceSerializer(balance).data)
