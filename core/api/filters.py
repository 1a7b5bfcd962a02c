"""Query-string filters shared by the apps' filter sets."""

import django_filters
from django import forms


class TrueFalseField(forms.Field):
    """``true`` or ``false`` and nothing else: django-filter's boolean also takes ``null``,
    ``unknown`` or ``2`` and then silently filters nothing."""

    default_error_messages = {"invalid": "Give true or false."}

    def to_python(self, value):
        if value in (None, ""):
            return None
        if value not in ("true", "false"):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        return value == "true"


class BooleanFilter(django_filters.BooleanFilter):
    field_class = TrueFalseField
