"""Page-number pagination with its limits kept and documented.

``page`` is a whole number from 1 and ``page_size`` one from 1 to ``max_page_size``: anything
else is a 400 ``validation_error`` naming the parameter (DRF would silently use the default
size, or answer 404 for ``page=0``). A page past the last one is a 404 ``not_found``."""

from typing import Any

from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination

MAX_PAGE_NUMBER = 2**31 - 1


def _whole_number(raw: str, name: str, *, maximum: int) -> int:
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise serializers.ValidationError(
            {name: [f"A whole number from 1 to {maximum}."]}, code="invalid"
        )
    return int(raw)


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_number(self, request, paginator) -> int:
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        return _whole_number(raw, self.page_query_param, maximum=MAX_PAGE_NUMBER)

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        return _whole_number(raw, self.page_size_query_param, maximum=self.max_page_size)

    def get_schema_operation_parameters(self, view) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"].update(minimum=1, maximum=MAX_PAGE_NUMBER)
                parameter["description"] = "Page number, from 1; a page past the last is a 404."
            elif parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
                parameter["description"] = (
                    f"Results per page, 1 to {self.max_page_size} (default {self.page_size})."
                )
        return parameters
