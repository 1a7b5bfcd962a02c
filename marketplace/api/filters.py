from datetime import UTC

import django_filters
from django import forms
from django.utils.dateparse import parse_datetime

from core.timeutils import offset_in_use
from marketplace.models import Reservation


class AwareIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """ISO 8601 with a UTC offset; a time without one is refused, not guessed, and so is an
    offset no place uses (beyond ±14:00, e.g. ``-17:15``, which PostgreSQL would not take
    either). Returned in UTC."""

    def to_python(self, value):
        if isinstance(value, str) and value.strip():
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None  # well-formed but impossible: the parent says "invalid"
            if parsed is not None and parsed.tzinfo is None:
                raise forms.ValidationError(
                    "Give a UTC offset, e.g. 2026-12-07T09:00:00Z.", code="naive"
                )
            if parsed is not None and not offset_in_use(parsed):
                raise forms.ValidationError(
                    "A UTC offset is between -14:00 and +14:00.", code="invalid_offset"
                )
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00-01:00 lies before the first UTC instant
            raise forms.ValidationError("Out of range.", code="invalid") from None


class AwareIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = AwareIsoDateTimeField


class ReservationFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=Reservation.Status.choices,
        help_text="Only these statuses; repeat for several (status=held&status=confirmed).",
    )
    start_after = AwareIsoDateTimeFilter(
        field_name="start", lookup_expr="gte", help_text="Starting at or after this time."
    )
    start_before = AwareIsoDateTimeFilter(
        field_name="start", lookup_expr="lt", help_text="Starting before this time."
    )
    end_after = AwareIsoDateTimeFilter(
        field_name="end", lookup_expr="gt", help_text="Ending after this time."
    )
    end_before = AwareIsoDateTimeFilter(
        field_name="end", lookup_expr="lte", help_text="Ending at or before this time."
    )
    pool = django_filters.CharFilter(field_name="pool__slug", help_text="Pool slug.")

    class Meta:
        model = Reservation
        fields = ["status", "start_after", "start_before", "end_after", "end_before", "pool"]
