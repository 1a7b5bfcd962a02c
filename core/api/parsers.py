"""The API's one body format."""

from typing import Any

from rest_framework import exceptions, parsers


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with JSON nested deeper than Python can parse (``[[[[...]]]]``)
    answered as a 400 ``parse_error`` like any other malformed body, not a server error."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context=None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None
