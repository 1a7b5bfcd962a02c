"""Schemathesis hooks for tests/core/test_api_fuzzing.py (loaded with SCHEMATHESIS_HOOKS).

Random bodies almost never name a GPU model the catalogue has and a whole-hour window in the
future, so the booking operations would only ever answer 400. Half of the schema-valid
booking bodies are turned into bookable requests (the GPU model and windows the test seeded,
starting a day or more ahead), so that quotes and reservations are created and the stateful
phase can follow the links from them: confirm, extend, cancel. Likewise half of the webhook
endpoints get a URL the server accepts. Negative (schema-violating) bodies are left as
generated."""

from datetime import UTC, datetime, timedelta

import schemathesis

GPU_MODEL = "h100-sxm-80gb"
BOOKING_FIELDS = ("region", "provider", "tier", "pool", "max_unit_price")


def _next_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def _positive_dict_body(case) -> bool:
    meta = getattr(case, "meta", None)
    negative = meta is not None and meta.generation.mode.is_negative
    return not negative and isinstance(case.body, dict)


@schemathesis.hook
def map_case(context, case):
    operation = context.operation
    if operation is None or not _positive_dict_body(case):
        return case
    if operation.method.upper() == "POST" and operation.path == "/api/v1/webhook-endpoints/":
        if len(case.body.get("description", "")) % 2 == 0:
            case.body = {**case.body, "url": "https://127.0.0.1:9/hooks"}
        return case
    if operation.method.upper() != "POST":
        return case
    if operation.path not in ("/api/v1/quotes/", "/api/v1/reservations/"):
        return case
    body = case.body
    if "quote" in body:
        return case
    count = body.get("gpu_count")
    if not isinstance(count, int) or count % 2:
        return case
    start = _next_hour() + timedelta(days=1 + count % 20, hours=count % 24)
    booking = {key: value for key, value in body.items() if key not in BOOKING_FIELDS}
    booking.update(
        gpu_model=GPU_MODEL,
        gpu_count=8 * (1 + count % 4),
        start=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        end=(start + timedelta(hours=1 + count % 48)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    case.body = booking
    return case
