"""The events and webhooks API as a tenant uses it: its events read with a cursor, its webhook
endpoints managed, its deliveries inspected.

Every test has a second tenant, Globex, with events, endpoints and deliveries of its own made
in the same moments: none of them may show up in Acme's answers, and Globex's ids are 404s (or
an invalid cursor) for Acme."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import transaction
from rest_framework.test import APIClient

from events.models import Delivery, DeliveryAttempt, Event, WebhookEndpoint
from events.services import endpoint_create, event_record
from events.types import EVENT_TYPES
from marketplace.models import Tenant
from marketplace.services.tenants import api_key_create, tenant_create

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW_SHOWN = "2026-03-02T09:00:00Z"
VALID_TYPES = sorted(EVENT_TYPES)


def client_of(tenant: Tenant) -> APIClient:
    """An API client that authenticates with a real Bearer key of ``tenant``."""
    _, raw_key = api_key_create(tenant=tenant)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def record(tenant: Tenant, type_: str, data: dict, *, at: datetime = NOW) -> Event:
    with transaction.atomic():
        return event_record(tenant_id=tenant.pk, type=type_, data=data, now=at)


def shown(event: Event) -> dict:
    return {
        "id": event.id,
        "type": event.type,
        "sequence": event.sequence,
        "created_at": event.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": event.data,
    }


def new_endpoint(tenant: Tenant, url: str, **fields) -> WebhookEndpoint:
    with time_machine.travel(NOW, tick=False):
        return endpoint_create(tenant_id=tenant.pk, url=url, **fields)


@pytest.fixture
def acme(db) -> Tenant:
    return tenant_create(name="Acme AI", slug="acme")


@pytest.fixture
def globex(db) -> Tenant:
    return tenant_create(name="Globex", slug="globex")


@pytest.fixture
def history(acme, globex) -> dict[str, Event]:
    """Acme: four events, a minute apart (quote created, reservation confirmed, quote created,
    reservation cancelled); Globex: three events in between (two quotes created, one
    reservation confirmed)."""
    events = {}
    for minute, (owner, name, type_) in enumerate(
        [
            (acme, "a1", "quote.created"),
            (globex, "g1", "quote.created"),
            (acme, "a2", "reservation.confirmed"),
            (globex, "g2", "reservation.confirmed"),
            (acme, "a3", "quote.created"),
            (globex, "g3", "quote.created"),
            (acme, "a4", "reservation.cancelled"),
        ]
    ):
        events[name] = record(
            owner, type_, {"id": f"res-{name}", "gpus": 8}, at=NOW + timedelta(minutes=minute)
        )
    return events


# --- events ------------------------------------------------------------------------------------


def test_a_tenant_lists_its_own_events_in_sequence_order(acme, history):
    # when
    response = client_of(acme).get("/api/v1/events/")

    # then
    assert response.status_code == 200
    assert response.json() == {
        "results": [
            {
                "id": history["a1"].id,
                "type": "quote.created",
                "sequence": 1,
                "created_at": "2026-03-02T09:00:00Z",
                "data": {"id": "res-a1", "gpus": 8},
            },
            {
                "id": history["a2"].id,
                "type": "reservation.confirmed",
                "sequence": 2,
                "created_at": "2026-03-02T09:02:00Z",
                "data": {"id": "res-a2", "gpus": 8},
            },
            {
                "id": history["a3"].id,
                "type": "quote.created",
                "sequence": 3,
                "created_at": "2026-03-02T09:04:00Z",
                "data": {"id": "res-a3", "gpus": 8},
            },
            {
                "id": history["a4"].id,
                "type": "reservation.cancelled",
                "sequence": 4,
                "created_at": "2026-03-02T09:06:00Z",
                "data": {"id": "res-a4", "gpus": 8},
            },
        ],
        "has_more": False,
        "next": None,
    }


def test_events_are_read_page_by_page_after_the_last_id(acme, history):
    # given
    client = client_of(acme)

    # when
    first = client.get("/api/v1/events/?limit=2").json()
    second = client.get(first["next"]).json()
    later = client.get(f"/api/v1/events/?after={history['a4'].id}").json()

    # then
    assert first == {
        "results": [shown(history["a1"]), shown(history["a2"])],
        "has_more": True,
        "next": f"http://testserver/api/v1/events/?after={history['a2'].id}&limit=2",
    }
    assert second == {
        "results": [shown(history["a3"]), shown(history["a4"])],
        "has_more": False,
        "next": None,
    }
    assert later == {"results": [], "has_more": False, "next": None}


def test_a_new_event_follows_the_last_one_read(acme, globex, history):
    # given
    client = client_of(acme)
    last = client.get("/api/v1/events/").json()["results"][-1]["id"]
    record(globex, "balance.low", {"available": "0.00"}, at=NOW + timedelta(hours=1))
    newest = record(acme, "invoice.paid", {"number": "INV-1"}, at=NOW + timedelta(hours=1))

    # when
    response = client.get(f"/api/v1/events/?after={last}")

    # then
    assert response.json() == {"results": [shown(newest)], "has_more": False, "next": None}
    assert shown(newest)["sequence"] == 5


def test_events_filter_by_type_and_the_next_page_keeps_the_filter(acme, history):
    # given
    client = client_of(acme)

    # when
    first = client.get("/api/v1/events/?type=quote.created&limit=1").json()
    second = client.get(first["next"]).json()

    # then
    assert first == {
        "results": [shown(history["a1"])],
        "has_more": True,
        "next": (
            f"http://testserver/api/v1/events/?after={history['a1'].id}&limit=1&type=quote.created"
        ),
    }
    assert second == {"results": [shown(history["a3"])], "has_more": False, "next": None}


def test_an_unknown_event_type_filter_is_refused_with_the_valid_types(acme, history):
    # when
    response = client_of(acme).get("/api/v1/events/?type=quote.lost")

    # then
    assert response.status_code == 400
    assert response.json() == {
        "code": "validation_error",
        "detail": "The request has invalid fields.",
        "fields": {
            "type": [
                {
                    "code": "invalid_choice",
                    "message": f'Unknown event type "quote.lost". Valid types: '
                    f"{', '.join(VALID_TYPES)}.",
                }
            ]
        },
    }


@pytest.mark.parametrize("cursor", ["evt_01J000000000000000000000", "not-an-id", "x" * 200])
def test_a_cursor_that_is_not_one_of_the_tenants_events_is_refused(acme, history, cursor):
    # when
    response = client_of(acme).get("/api/v1/events/", {"after": cursor})

    # then
    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid_cursor",
        "detail": "`after` is not the id of one of your events.",
        "fields": {"after": [{"code": "invalid_cursor", "message": "No such event."}]},
    }


def test_another_tenants_event_is_no_cursor(acme, history):
    # when
    response = client_of(acme).get("/api/v1/events/", {"after": history["g1"].id})

    # then
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    ("limit", "code"), [("0", "min_value"), ("501", "max_value"), ("ten", "invalid")]
)
def test_a_limit_outside_1_to_500_is_refused(acme, history, limit, code):
    # when
    response = client_of(acme).get("/api/v1/events/", {"limit": limit})

    # then
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], [error["code"] for error in body["fields"]["limit"]]) == (
        "validation_error",
        [code],
    )


def test_a_limit_of_500_is_accepted(acme, history):
    response = client_of(acme).get("/api/v1/events/", {"limit": "500"})

    assert (response.status_code, len(response.json()["results"])) == (200, 4)


def test_a_tenant_reads_one_of_its_events(acme, history):
    # when
    response = client_of(acme).get(f"/api/v1/events/{history['a2'].id}/")

    # then
    assert response.status_code == 200
    assert response.json() == {
        "id": history["a2"].id,
        "type": "reservation.confirmed",
        "sequence": 2,
        "created_at": "2026-03-02T09:02:00Z",
        "data": {"id": "res-a2", "gpus": 8},
    }


@pytest.mark.parametrize("event_id", ["g1", "unknown", "long", "nul"])
def test_another_tenants_or_an_unknown_event_is_not_found(acme, history, event_id):
    # given
    path = {
        "g1": history["g1"].id,
        "unknown": "evt_01J000000000000000000000",
        "long": "x" * 300,
        "nul": "evt_%00",
    }[event_id]

    # when
    response = client_of(acme).get(f"/api/v1/events/{path}/")

    # then
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "No such event.", "fields": {}}


# --- who may call ------------------------------------------------------------------------------

TENANT_PATHS = [
    "/api/v1/events/",
    "/api/v1/events/evt_1/",
    "/api/v1/webhook-endpoints/",
    "/api/v1/webhook-endpoints/1/",
    "/api/v1/webhook-endpoints/1/deliveries/",
    "/api/v1/webhook-deliveries/1/",
]


@pytest.mark.parametrize("path", TENANT_PATHS)
def test_without_credentials_the_api_answers_401(db, path):
    response = APIClient().get(path)

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize("path", TENANT_PATHS)
def test_an_operator_session_has_no_tenant_and_is_refused(operator_client, path):
    response = operator_client.get(path)

    assert response.status_code == 403
    assert response.json() == {
        "code": "tenant_required",
        "detail": "This endpoint needs a tenant API key: `Authorization: Bearer <key>`.",
        "fields": {},
    }


def test_an_operator_session_cannot_create_an_endpoint(operator_client):
    response = operator_client.post(
        "/api/v1/webhook-endpoints/", {"url": "https://ops.example.com/hook"}
    )

    assert (response.status_code, response.json()["code"]) == (403, "tenant_required")
    assert WebhookEndpoint.objects.count() == 0


# --- webhook endpoints -------------------------------------------------------------------------

ENDPOINT_STATE = {
    "enabled": True,
    "disabled_reason": "",
    "disabled_at": None,
    "failing_since": None,
    "last_success_at": None,
    "created_at": NOW_SHOWN,
    "updated_at": NOW_SHOWN,
}


def test_a_tenant_adds_an_endpoint_and_sees_its_secret_once(acme, globex):
    # given
    new_endpoint(globex, "https://hooks.globex.example/in")
    client = client_of(acme)

    # when
    with time_machine.travel(NOW, tick=False):
        created = client.post(
            "/api/v1/webhook-endpoints/",
            {
                "url": "https://hooks.acme.example/gpu",
                "description": "Ops channel",
                "event_types": ["reservation.ended", "quote.created", "quote.created"],
            },
        )

    # then
    assert created.status_code == 201
    body = created.json()
    endpoint = WebhookEndpoint.objects.get(tenant_id=acme.pk)
    assert body == {
        "id": endpoint.pk,
        "url": "https://hooks.acme.example/gpu",
        "description": "Ops channel",
        "event_types": ["quote.created", "reservation.ended"],
        **ENDPOINT_STATE,
        "secret": endpoint.secret,
    }
    assert body["secret"].startswith("whsec_")
    shown_later = {
        "id": endpoint.pk,
        "url": "https://hooks.acme.example/gpu",
        "description": "Ops channel",
        "event_types": ["quote.created", "reservation.ended"],
        **ENDPOINT_STATE,
    }
    assert client.get(f"/api/v1/webhook-endpoints/{endpoint.pk}/").json() == shown_later
    assert client.get("/api/v1/webhook-endpoints/").json() == {
        "count": 1,
        "next": None,
        "previous": None,
        "results": [shown_later],
    }


def test_an_endpoint_without_event_types_receives_every_type(acme):
    # when
    response = client_of(acme).post(
        "/api/v1/webhook-endpoints/", {"url": "https://hooks.acme.example/all"}
    )

    # then
    assert response.status_code == 201
    assert (response.json()["event_types"], response.json()["description"]) == ([], "")


def test_the_endpoint_list_is_paginated_oldest_first_and_holds_only_the_tenants_own(acme, globex):
    # given
    urls = [f"https://hooks.acme.example/{n}" for n in range(3)]
    for n, url in enumerate(urls):
        with time_machine.travel(NOW + timedelta(minutes=n), tick=False):
            endpoint_create(tenant_id=acme.pk, url=url)
            endpoint_create(tenant_id=globex.pk, url=f"https://hooks.globex.example/{n}")
    client = client_of(acme)

    # when
    first = client.get("/api/v1/webhook-endpoints/?page_size=2").json()
    second = client.get(first["next"]).json()

    # then
    assert (first["count"], [row["url"] for row in first["results"]]) == (3, urls[:2])
    assert first["next"] == "http://testserver/api/v1/webhook-endpoints/?page=2&page_size=2"
    assert ([row["url"] for row in second["results"]], second["next"]) == (urls[2:], None)
    assert "secret" not in first["results"][0]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"url": "ftp://files.acme.example/hook"}, "url_not_allowed", "url"),
        ({"url": "ftp://x"}, "validation_error", "url"),
        ({"url": "not a url"}, "validation_error", "url"),
        ({"url": "https://user:pw@hooks.acme.example/"}, "url_not_allowed", "url"),
        ({}, "validation_error", "url"),
        (
            {"url": "https://hooks.acme.example/", "description": "d" * 501},
            "validation_error",
            "description",
        ),
        (
            {"url": "https://hooks.acme.example/", "event_types": "quote.created"},
            "validation_error",
            "event_types",
        ),
    ],
)
def test_bad_endpoint_input_is_refused_with_a_code(acme, body, code, field):
    # when
    response = client_of(acme).post("/api/v1/webhook-endpoints/", body, format="json")

    # then
    assert response.status_code == 400
    assert (response.json()["code"], list(response.json()["fields"])) == (code, [field])
    assert WebhookEndpoint.objects.count() == 0


def test_a_description_of_500_characters_is_accepted(acme):
    response = client_of(acme).post(
        "/api/v1/webhook-endpoints/",
        {"url": "https://hooks.acme.example/", "description": "d" * 500},
    )

    assert (response.status_code, len(response.json()["description"])) == (201, 500)


def test_an_unknown_event_type_is_refused_with_every_valid_type(acme):
    # when
    response = client_of(acme).post(
        "/api/v1/webhook-endpoints/",
        {"url": "https://hooks.acme.example/", "event_types": ["quote.created", "quote.lost"]},
    )

    # then
    assert response.status_code == 400
    assert response.json() == {
        "code": "unknown_event_type",
        "detail": "Unknown event type 'quote.lost'.",
        "fields": {},
        "valid_types": VALID_TYPES,
    }
    assert WebhookEndpoint.objects.count() == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.7/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "http://93.184.215.14/hook",
    ],
)
def test_private_and_plain_http_urls_are_refused_in_production(acme, settings, url):
    # given
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False

    # when
    response = client_of(acme).post("/api/v1/webhook-endpoints/", {"url": url})

    # then
    assert response.status_code == 400
    assert response.json()["code"] == "url_not_allowed"
    assert response.json()["fields"]["url"][0]["code"] == "url_not_allowed"
    assert WebhookEndpoint.objects.count() == 0


def test_a_public_https_address_is_accepted_in_production(acme, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False

    response = client_of(acme).post(
        "/api/v1/webhook-endpoints/", {"url": "https://93.184.215.14/hook"}
    )

    assert response.status_code == 201


def test_patch_changes_only_the_fields_given(acme, globex):
    # given
    endpoint = new_endpoint(
        acme, "https://hooks.acme.example/old", description="Old", event_types=["quote.created"]
    )
    theirs = new_endpoint(globex, "https://hooks.globex.example/in", description="Theirs")

    # when
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        response = client_of(acme).patch(
            f"/api/v1/webhook-endpoints/{endpoint.pk}/",
            {"url": "https://hooks.acme.example/new", "event_types": ["invoice.paid"]},
        )

    # then
    assert response.status_code == 200
    assert response.json() == {
        "id": endpoint.pk,
        "url": "https://hooks.acme.example/new",
        "description": "Old",
        "event_types": ["invoice.paid"],
        **ENDPOINT_STATE,
        "updated_at": "2026-03-02T10:00:00Z",
    }
    theirs.refresh_from_db()
    assert (theirs.url, theirs.description) == ("https://hooks.globex.example/in", "Theirs")


def test_a_tenant_disables_its_endpoint_and_enabling_it_clears_why(acme):
    # given
    endpoint = new_endpoint(acme, "https://hooks.acme.example/")
    client = client_of(acme)
    path = f"/api/v1/webhook-endpoints/{endpoint.pk}/"

    # when
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        disabled = client.patch(path, {"enabled": False}).json()
    with time_machine.travel(NOW + timedelta(hours=2), tick=False):
        enabled = client.patch(path, {"enabled": True}).json()

    # then
    assert (disabled["enabled"], disabled["disabled_reason"], disabled["disabled_at"]) == (
        False,
        "by_tenant",
        "2026-03-02T10:00:00Z",
    )
    assert (enabled["enabled"], enabled["disabled_reason"], enabled["disabled_at"]) == (
        True,
        "",
        None,
    )


def test_enabling_an_endpoint_disabled_for_failing_clears_the_reason_and_the_streak(acme):
    # given
    endpoint = new_endpoint(acme, "https://hooks.acme.example/")
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=False,
        disabled_reason=WebhookEndpoint.DisabledReason.FAILING,
        disabled_at=NOW + timedelta(days=3),
        failing_since=NOW,
    )
    path = f"/api/v1/webhook-endpoints/{endpoint.pk}/"
    client = client_of(acme)
    before = client.get(path).json()

    # when
    after = client.patch(path, {"enabled": True}).json()

    # then
    assert [before[key] for key in ("enabled", "disabled_reason", "disabled_at")] == [
        False,
        "failing",
        "2026-03-05T09:00:00Z",
    ]
    assert before["failing_since"] == NOW_SHOWN
    assert [after[key] for key in ("enabled", "disabled_reason", "disabled_at")] == [
        True,
        "",
        None,
    ]
    assert after["failing_since"] is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "ftp://files.acme.example/"}, "url_not_allowed"),
        ({"event_types": ["quote.lost"]}, "unknown_event_type"),
        ({"description": "d" * 501}, "validation_error"),
        ({"enabled": "sometimes"}, "validation_error"),
    ],
)
def test_a_bad_change_is_refused_and_nothing_changes(acme, body, code):
    # given
    endpoint = new_endpoint(acme, "https://hooks.acme.example/", description="Same")

    # when
    response = client_of(acme).patch(f"/api/v1/webhook-endpoints/{endpoint.pk}/", body)

    # then
    assert (response.status_code, response.json()["code"]) == (400, code)
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.description, endpoint.event_types, endpoint.enabled) == (
        "https://hooks.acme.example/",
        "Same",
        [],
        True,
    )


def test_a_tenant_deletes_its_endpoint(acme, globex):
    # given
    endpoint = new_endpoint(acme, "https://hooks.acme.example/")
    theirs = new_endpoint(globex, "https://hooks.globex.example/")
    client = client_of(acme)

    # when
    response = client.delete(f"/api/v1/webhook-endpoints/{endpoint.pk}/")

    # then
    assert (response.status_code, response.content) == (204, b"")
    assert client.get(f"/api/v1/webhook-endpoints/{endpoint.pk}/").status_code == 404
    assert list(WebhookEndpoint.objects.values_list("pk", flat=True)) == [theirs.pk]


def test_rotating_the_secret_shows_the_new_one_once_and_when_the_old_one_stops(acme, globex):
    # given
    endpoint = new_endpoint(acme, "https://hooks.acme.example/")
    theirs = new_endpoint(globex, "https://hooks.globex.example/")
    client = client_of(acme)

    # when
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        response = client.post(f"/api/v1/webhook-endpoints/{endpoint.pk}/rotate-secret/")

    # then
    assert response.status_code == 200
    rotated = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert (rotated.previous_secret, rotated.secret == endpoint.secret) == (endpoint.secret, False)
    assert response.json() == {
        "id": endpoint.pk,
        "url": "https://hooks.acme.example/",
        "description": "",
        "event_types": [],
        **ENDPOINT_STATE,
        "updated_at": "2026-03-02T10:00:00Z",
        "secret": rotated.secret,
        "previous_secret_expires_at": "2026-03-03T10:00:00Z",  # 24 hours of overlap
    }
    shown_later = client.get(f"/api/v1/webhook-endpoints/{endpoint.pk}/").json()
    assert "secret" not in shown_later
    assert "previous_secret_expires_at" not in shown_later
    assert WebhookEndpoint.objects.get(pk=theirs.pk).secret == theirs.secret


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("post", "rotate-secret/"),
        ("get", "deliveries/"),
    ],
)
def test_another_tenants_endpoint_is_not_found_and_untouched(acme, globex, method, suffix):
    # given
    theirs = new_endpoint(globex, "https://hooks.globex.example/", description="Theirs")
    client = client_of(acme)

    # when
    response = getattr(client, method)(
        f"/api/v1/webhook-endpoints/{theirs.pk}/{suffix}", {"description": "Mine"}
    )

    # then
    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "detail": "No such webhook endpoint.",
        "fields": {},
    }
    assert WebhookEndpoint.objects.get(pk=theirs.pk).secret == theirs.secret
    assert WebhookEndpoint.objects.get(pk=theirs.pk).description == "Theirs"


@pytest.mark.parametrize("endpoint_id", ["abc", "1.5", "-1", "99999999999999999999999", "0"])
def test_a_malformed_or_unknown_endpoint_id_is_a_json_404(acme, endpoint_id):
    client = client_of(acme)

    for response in (
        client.get(f"/api/v1/webhook-endpoints/{endpoint_id}/"),
        client.post(f"/api/v1/webhook-endpoints/{endpoint_id}/rotate-secret/"),
        client.get(f"/api/v1/webhook-endpoints/{endpoint_id}/deliveries/"),
    ):
        assert (response.status_code, response.json()["code"]) == (404, "not_found")


# --- deliveries --------------------------------------------------------------------------------


@pytest.fixture
def sent(acme, globex) -> dict:
    """Acme's endpoint got three events, a minute apart: the first delivered at the second
    attempt (a 500, then a 200), the second failed for good, the third still pending. Globex's
    endpoint got the same three events of its own, in the same minutes."""
    mine = new_endpoint(acme, "https://hooks.acme.example/")
    theirs = new_endpoint(globex, "https://hooks.globex.example/")
    deliveries = {}
    for minute, type_ in enumerate(["quote.created", "reservation.confirmed", "quote.expired"]):
        at = NOW + timedelta(minutes=minute)
        for owner, name in ((acme, "mine"), (globex, "theirs")):
            event = record(owner, type_, {"id": f"{name}-{minute}"}, at=at)
            deliveries[f"{name}-{minute}"] = Delivery.objects.get(event=event)
    delivered, failed = deliveries["mine-0"], deliveries["mine-1"]
    DeliveryAttempt.objects.bulk_create(
        [
            DeliveryAttempt(
                delivery=delivered,
                attempted_at=NOW + timedelta(seconds=1),
                status_code=500,
                duration_ms=120,
                response_body="upstream down",
            ),
            DeliveryAttempt(
                delivery=delivered,
                attempted_at=NOW + timedelta(seconds=7),
                status_code=200,
                duration_ms=35,
                response_body="ok",
            ),
            DeliveryAttempt(
                delivery=failed,
                attempted_at=NOW + timedelta(minutes=1, seconds=1),
                status_code=None,
                duration_ms=10000,
                error="ReadTimeout: timed out",
            ),
        ]
    )
    Delivery.objects.filter(pk=delivered.pk).update(
        status="succeeded",
        attempts=2,
        last_status_code=200,
        delivered_at=NOW + timedelta(seconds=7),
    )
    Delivery.objects.filter(pk=failed.pk).update(
        status="failed", attempts=9, last_error="ReadTimeout: timed out"
    )
    Delivery.objects.filter(endpoint=theirs).update(status="failed", attempts=9)
    return {"mine": mine, "theirs": theirs, **deliveries}


def test_an_endpoints_deliveries_are_listed_newest_first(acme, sent):
    # when
    response = client_of(acme).get(f"/api/v1/webhook-endpoints/{sent['mine'].pk}/deliveries/")

    # then
    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (3, None, None)
    assert body["results"] == [
        {
            "id": sent["mine-2"].pk,
            "event": sent["mine-2"].event_id,
            "event_type": "quote.expired",
            "endpoint": sent["mine"].pk,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": "2026-03-02T09:02:00Z",
            "last_status_code": None,
            "last_error": "",
            "created_at": "2026-03-02T09:02:00Z",
            "delivered_at": None,
        },
        {
            "id": sent["mine-1"].pk,
            "event": sent["mine-1"].event_id,
            "event_type": "reservation.confirmed",
            "endpoint": sent["mine"].pk,
            "status": "failed",
            "attempts": 9,
            "next_attempt_at": "2026-03-02T09:01:00Z",
            "last_status_code": None,
            "last_error": "ReadTimeout: timed out",
            "created_at": "2026-03-02T09:01:00Z",
            "delivered_at": None,
        },
        {
            "id": sent["mine-0"].pk,
            "event": sent["mine-0"].event_id,
            "event_type": "quote.created",
            "endpoint": sent["mine"].pk,
            "status": "succeeded",
            "attempts": 2,
            "next_attempt_at": "2026-03-02T09:00:00Z",
            "last_status_code": 200,
            "last_error": "",
            "created_at": NOW_SHOWN,
            "delivered_at": "2026-03-02T09:00:07Z",
        },
    ]


@pytest.mark.parametrize(
    ("status", "expected"),
    [("failed", ["mine-1"]), ("pending", ["mine-2"]), ("succeeded", ["mine-0"]), ("cancelled", [])],
)
def test_deliveries_filter_by_status(acme, sent, status, expected):
    response = client_of(acme).get(
        f"/api/v1/webhook-endpoints/{sent['mine'].pk}/deliveries/", {"status": status}
    )

    assert [row["id"] for row in response.json()["results"]] == [sent[n].pk for n in expected]


def test_an_unknown_delivery_status_filter_is_refused(acme, sent):
    response = client_of(acme).get(
        f"/api/v1/webhook-endpoints/{sent['mine'].pk}/deliveries/", {"status": "lost"}
    )

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert [error["code"] for error in response.json()["fields"]["status"]] == ["invalid_choice"]


def test_a_delivery_comes_with_its_attempts(acme, sent):
    # when
    response = client_of(acme).get(f"/api/v1/webhook-deliveries/{sent['mine-0'].pk}/")

    # then
    assert response.status_code == 200
    assert response.json() == {
        "id": sent["mine-0"].pk,
        "event": sent["mine-0"].event_id,
        "event_type": "quote.created",
        "endpoint": sent["mine"].pk,
        "status": "succeeded",
        "attempts": 2,
        "next_attempt_at": NOW_SHOWN,
        "last_status_code": 200,
        "last_error": "",
        "created_at": NOW_SHOWN,
        "delivered_at": "2026-03-02T09:00:07Z",
        "attempts_made": [
            {
                "attempted_at": "2026-03-02T09:00:01Z",
                "status_code": 500,
                "duration_ms": 120,
                "response_body": "upstream down",
                "error": "",
            },
            {
                "attempted_at": "2026-03-02T09:00:07Z",
                "status_code": 200,
                "duration_ms": 35,
                "response_body": "ok",
                "error": "",
            },
        ],
    }


def test_a_failed_delivery_shows_why_no_answer_came(acme, sent):
    response = client_of(acme).get(f"/api/v1/webhook-deliveries/{sent['mine-1'].pk}/")

    assert response.json()["attempts_made"] == [
        {
            "attempted_at": "2026-03-02T09:01:01Z",
            "status_code": None,
            "duration_ms": 10000,
            "response_body": "",
            "error": "ReadTimeout: timed out",
        }
    ]


@pytest.mark.parametrize("delivery", ["theirs-0", "abc", "1.5", "99999999999999999999999", "0"])
def test_another_tenants_or_a_malformed_delivery_is_not_found(acme, sent, delivery):
    # given
    delivery_id = sent[delivery].pk if delivery in sent else delivery

    # when
    response = client_of(acme).get(f"/api/v1/webhook-deliveries/{delivery_id}/")

    # then
    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "detail": "No such webhook delivery.",
        "fields": {},
    }


def test_the_other_tenant_sees_only_its_own_deliveries(globex, sent):
    # when
    response = client_of(globex).get(f"/api/v1/webhook-endpoints/{sent['theirs'].pk}/deliveries/")

    # then
    assert [(row["id"], row["status"]) for row in response.json()["results"]] == [
        (sent["theirs-2"].pk, "failed"),
        (sent["theirs-1"].pk, "failed"),
        (sent["theirs-0"].pk, "failed"),
    ]
