"""The base of every serializer that reads a JSON body: JSON types are kept, not coerced.

DRF accepts ``"8"`` for an integer, ``0`` for a string and ``"yes"`` for a boolean. A JSON body
is typed, and the schema says which type each field takes, so a value of another type is a
400 ``validation_error`` (code ``invalid_type``) instead of a guess. Amounts (decimal fields)
are strings, e.g. ``"12.50"``, as the schema says: a JSON number may have lost digits before
it arrives. Query strings carry only text, so a ``QueryDict`` is left to the fields'
own parsing."""

import copy
import functools
from collections.abc import Mapping
from typing import Any

from django.http import QueryDict
from rest_framework import serializers
from rest_framework.fields import empty

# The JSON type each kind of field takes, most specific first (BooleanField before nothing
# else matters: bool is an int in Python, so integers exclude it explicitly).
_STRING_FIELDS = (
    serializers.CharField,
    serializers.ChoiceField,
    serializers.DateTimeField,
    serializers.DateField,
    serializers.TimeField,
    serializers.UUIDField,
    serializers.DecimalField,
)


def _type_error(field: serializers.Field, value: Any) -> str | None:
    """What is wrong with ``value``'s JSON type for ``field``, or None."""
    if value is None:
        return None  # allow_null is the field's own check
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else "Expected true or false."
    if isinstance(field, serializers.IntegerField):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "Expected an integer."
    if isinstance(field, serializers.DecimalField):
        return None if isinstance(value, str) else 'Expected a decimal string, e.g. "12.50".'
    if isinstance(field, _STRING_FIELDS):
        return None if isinstance(value, str) else "Expected a string."
    if isinstance(field, serializers.ListField):
        return None if isinstance(value, list) else "Expected a list."
    return None


def json_type_errors(fields: Mapping[str, serializers.Field], data: Mapping) -> dict:
    """``{field: [ErrorDetail]}`` (list items by index) for every value of the wrong type."""
    errors: dict[str, Any] = {}
    for name, field in fields.items():
        if field.read_only or field.source == "*":
            continue
        value = data.get(name, empty)
        if value is empty:
            continue
        problem = _type_error(field, value)
        if problem is not None:
            errors[name] = [serializers.ErrorDetail(problem, code="invalid_type")]
        elif isinstance(field, serializers.ListField) and isinstance(value, list):
            items = {
                index: [serializers.ErrorDetail(item_problem, code="invalid_type")]
                for index, item in enumerate(value)
                if (item_problem := _type_error(field.child, item)) is not None
            }
            if items:
                errors[name] = items
    return errors


class JsonInputSerializer(serializers.Serializer):
    """Checks the JSON type of every given field before the fields parse their values."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping) and not isinstance(data, QueryDict):
            errors = json_type_errors(self.fields, data)
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


# For a ``ModelSerializer`` on a hot path: DRF builds its fields by introspecting the model for
# every serializer instance (about 0.3 ms for twenty fields). They depend only on the class (its
# ``Meta`` and declared fields), so they are built once per class and each instance gets a deep
# copy, as DRF itself does with declared fields. Put it first in the bases; not for serializers
# whose fields depend on the instance or the context. (A comment, not a docstring: the OpenAPI
# schema would show a docstring as each serializer's description.)
class FieldsBuiltOnce:
    def get_fields(self) -> dict[str, serializers.Field]:
        built = type(self).__dict__.get("_fields_built_once")
        if built is None:
            built = super().get_fields()  # type: ignore[misc]
            type(self)._fields_built_once = built  # type: ignore[attr-defined]
        return copy.deepcopy(built)


@functools.cache
def _shared(serializer_class: type[serializers.BaseSerializer]) -> serializers.BaseSerializer:
    return serializer_class()


def represent(serializer_class: type[serializers.BaseSerializer], instance: Any) -> dict:
    """``serializer_class(instance).data`` as a plain dict, rendered by one instance of the
    class shared by every call: building a serializer's fields costs more than rendering one
    object, and rendering keeps no state. For hot responses of serializers that read no
    context (no request, no hyperlinks)."""
    return dict(_shared(serializer_class).to_representation(instance))
