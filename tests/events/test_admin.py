"""The operator's screens for events and webhooks: what they show (never a secret in full),
that records stay read-only, and the actions (disable or enable an endpoint, resend a
delivery) going through the services."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import transaction
from django.urls import reverse

from events.models import Delivery, DeliveryAttempt, Event, WebhookEndpoint
from events.services import endpoint_create, endpoint_rotate_secret, event_record
from marketplace.models import Tenant
from marketplace.services.tenants import tenant_create
from tests.admin_helpers import form_values, headings, rows

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW_SHOWN = "March 2, 2026, 9 a.m."


def page(admin_client, name: str, *args, query: str = ""):
    return admin_client.get(reverse(f"admin:{name}", args=args) + query)


def record(tenant: Tenant, type_: str, data: dict, *, at: datetime = NOW) -> Event:
    with transaction.atomic():
        return event_record(tenant_id=tenant.pk, type=type_, data=data, now=at)


@pytest.fixture
def acme(db) -> Tenant:
    return tenant_create(name="Acme AI", slug="acme")


@pytest.fixture
def globex(db) -> Tenant:
    return tenant_create(name="Globex", slug="globex")


@pytest.fixture
def webhooks(acme, globex) -> dict:
    """Acme's endpoint, failing since 9:00, got a quote.created that failed for good after a
    503; Globex's endpoint got a balance.low an hour later, still pending."""
    with time_machine.travel(NOW, tick=False):
        mine = endpoint_create(tenant_id=acme.pk, url="https://hooks.acme.example/gpu")
        theirs = endpoint_create(tenant_id=globex.pk, url="https://hooks.globex.example/in")
    quote = record(acme, "quote.created", {"id": "res-1", "gpus": 8})
    low = record(globex, "balance.low", {"available": "12.50"}, at=NOW + timedelta(hours=1))
    failed = Delivery.objects.get(event=quote)
    DeliveryAttempt.objects.create(
        delivery=failed,
        attempted_at=NOW + timedelta(seconds=1),
        status_code=503,
        duration_ms=42,
        response_body="try later",
    )
    Delivery.objects.filter(pk=failed.pk).update(status="failed", attempts=1, last_status_code=503)
    WebhookEndpoint.objects.filter(pk=mine.pk).update(failing_since=NOW)
    return {
        "mine": mine,
        "theirs": theirs,
        "quote": quote,
        "low": low,
        "failed": Delivery.objects.get(pk=failed.pk),
        "pending": Delivery.objects.get(event=low),
    }


def test_the_endpoint_list_shows_each_endpoints_state(admin_client, acme, globex, webhooks):
    # when
    shown = rows(page(admin_client, "events_webhookendpoint_changelist"))

    # then
    assert sorted(shown, key=lambda row: row["id"]) == [
        {
            "id": str(webhooks["mine"].pk),
            "tenant_id": str(acme.pk),
            "url": "https://hooks.acme.example/gpu",
            "enabled": "True",  # the yes icon's alternative text
            "disabled_reason": "—",
            "failing_since": NOW_SHOWN,
            "last_success_at": "-",
        },
        {
            "id": str(webhooks["theirs"].pk),
            "tenant_id": str(globex.pk),
            "url": "https://hooks.globex.example/in",
            "enabled": "True",
            "disabled_reason": "—",
            "failing_since": "-",
            "last_success_at": "-",
        },
    ]


def test_an_endpoint_page_shows_only_a_prefix_of_its_secret(admin_client, acme, webhooks):
    # given
    endpoint = webhooks["mine"]

    # when
    response = page(admin_client, "events_webhookendpoint_change", endpoint.pk)

    # then
    values = form_values(response)
    assert values["secret_prefix"] == endpoint.secret[:10] + "…"
    assert values["previous_secret_prefix"] == "-"
    assert (values["tenant_id"], values["url"]) == (str(acme.pk), "https://hooks.acme.example/gpu")
    assert endpoint.secret not in response.content.decode()
    assert endpoint.secret.removeprefix("whsec_") not in response.content.decode()


def test_after_a_rotation_neither_secret_is_shown_in_full(admin_client, webhooks):
    # given
    endpoint = webhooks["mine"]
    rotated = endpoint_rotate_secret(tenant_id=endpoint.tenant_id, endpoint_id=endpoint.pk)

    # when
    response = page(admin_client, "events_webhookendpoint_change", endpoint.pk)

    # then
    html = response.content.decode()
    assert endpoint.secret not in html
    assert rotated.secret not in html
    values = form_values(response)
    assert (values["secret_prefix"], values["previous_secret_prefix"]) == (
        rotated.secret[:10] + "…",
        endpoint.secret[:10] + "…",
    )


def test_endpoints_filter_by_why_they_are_disabled(admin_client, webhooks):
    # given
    WebhookEndpoint.objects.filter(pk=webhooks["theirs"].pk).update(
        enabled=False, disabled_reason="gone", disabled_at=NOW
    )

    # when
    gone = rows(
        page(admin_client, "events_webhookendpoint_changelist", query="?disabled_reason=gone")
    )
    enabled = rows(
        page(admin_client, "events_webhookendpoint_changelist", query="?enabled__exact=1")
    )

    # then
    assert [(row["id"], row["disabled_reason"]) for row in gone] == [
        (str(webhooks["theirs"].pk), "The endpoint answered 410 Gone")
    ]
    assert [row["id"] for row in enabled] == [str(webhooks["mine"].pk)]


def test_an_operator_disables_an_endpoint_and_enables_it_again(admin_client, webhooks):
    # given
    changelist = reverse("admin:events_webhookendpoint_changelist")
    mine, theirs = webhooks["mine"], webhooks["theirs"]

    # when
    with time_machine.travel(NOW + timedelta(hours=2), tick=False):
        admin_client.post(changelist, {"action": "disable", "_selected_action": [mine.pk]})
    disabled = WebhookEndpoint.objects.get(pk=mine.pk)
    admin_client.post(changelist, {"action": "enable", "_selected_action": [mine.pk]})
    enabled = WebhookEndpoint.objects.get(pk=mine.pk)

    # then
    assert (disabled.enabled, disabled.disabled_reason, disabled.disabled_at) == (
        False,
        "by_operator",
        NOW + timedelta(hours=2),
    )
    assert (enabled.enabled, enabled.disabled_reason, enabled.disabled_at) == (True, "", None)
    assert enabled.failing_since is None  # the failure streak starts again
    assert WebhookEndpoint.objects.get(pk=theirs.pk).enabled is True


def test_endpoints_cannot_be_added_or_edited_in_the_admin(admin_client, webhooks):
    # when
    add = page(admin_client, "events_webhookendpoint_add")
    edit = admin_client.post(
        reverse("admin:events_webhookendpoint_change", args=[webhooks["mine"].pk]),
        {"url": "https://evil.example/"},
    )

    # then
    assert (add.status_code, edit.status_code) == (403, 403)
    assert WebhookEndpoint.objects.get(pk=webhooks["mine"].pk).url == (
        "https://hooks.acme.example/gpu"
    )


def test_the_event_list_shows_every_tenants_events_newest_first(
    admin_client, acme, globex, webhooks
):
    # when
    shown = rows(page(admin_client, "events_event_changelist"))

    # then
    assert shown == [
        {
            "id": webhooks["low"].id,
            "tenant_id": str(globex.pk),
            "sequence": "1",
            "type": "balance.low",
            "created_at": "March 2, 2026, 10 a.m.",
        },
        {
            "id": webhooks["quote"].id,
            "tenant_id": str(acme.pk),
            "sequence": "1",
            "type": "quote.created",
            "created_at": NOW_SHOWN,
        },
    ]


def test_events_filter_by_type_and_search_by_id(admin_client, webhooks):
    # when
    by_type = rows(page(admin_client, "events_event_changelist", query="?type=balance.low"))
    by_id = rows(page(admin_client, "events_event_changelist", query=f"?q={webhooks['quote'].id}"))

    # then
    assert [row["id"] for row in by_type] == [webhooks["low"].id]
    assert [row["id"] for row in by_id] == [webhooks["quote"].id]


def test_an_event_page_shows_its_data_as_indented_json(admin_client, webhooks):
    # when
    response = page(admin_client, "events_event_change", webhooks["quote"].id)

    # then
    assert headings(response)["h2"] == f"{webhooks['quote'].id} quote.created"
    assert (
        "<pre>{\n  &quot;gpus&quot;: 8,\n  &quot;id&quot;: &quot;res-1&quot;\n}</pre>"
        in response.content.decode()
    )
    assert form_values(response)["type"] == "quote.created"


def test_a_delivery_page_lists_its_attempts(admin_client, webhooks):
    # given
    failed = webhooks["failed"]

    # when
    response = page(admin_client, "events_delivery_change", failed.pk)

    # then
    values = form_values(response)
    assert (values["event_type"], values["endpoint_url"], values["status"]) == (
        "quote.created",
        "https://hooks.acme.example/gpu",
        "Failed",
    )
    assert rows(response, within="attempts_made-group") == [
        {
            "attempted_at": "March 2, 2026, 9 a.m.",
            "status_code": "503",
            "duration_ms": "42",
            "response_body": "try later",
            "error": "-",
        }
    ]


def test_the_delivery_list_shows_status_and_filters_by_it(admin_client, acme, globex, webhooks):
    # when
    every = rows(page(admin_client, "events_delivery_changelist"))
    failed = rows(page(admin_client, "events_delivery_changelist", query="?status__exact=failed"))

    # then
    assert every == [
        {
            "id": str(webhooks["pending"].pk),
            "event_ref": webhooks["low"].id,
            "event_type": "balance.low",
            "endpoint_url": "https://hooks.globex.example/in",
            "tenant_id": str(globex.pk),
            "status": "Pending",
            "attempts": "0",
            "next_attempt_at": "March 2, 2026, 10 a.m.",
            "last_status_code": "-",
            "created_at": "March 2, 2026, 10 a.m.",
            "delivered_at": "-",
        },
        {
            "id": str(webhooks["failed"].pk),
            "event_ref": webhooks["quote"].id,
            "event_type": "quote.created",
            "endpoint_url": "https://hooks.acme.example/gpu",
            "tenant_id": str(acme.pk),
            "status": "Failed",
            "attempts": "1",
            "next_attempt_at": NOW_SHOWN,
            "last_status_code": "503",
            "created_at": NOW_SHOWN,
            "delivered_at": "-",
        },
    ]
    assert [row["id"] for row in failed] == [str(webhooks["failed"].pk)]


def test_resending_a_failed_delivery_makes_it_pending_and_due_now(admin_client, webhooks):
    # given
    failed, pending = webhooks["failed"], webhooks["pending"]
    resent_at = NOW + timedelta(days=1)

    # when
    with time_machine.travel(resent_at, tick=False):
        response = admin_client.post(
            reverse("admin:events_delivery_changelist"),
            {"action": "resend", "_selected_action": [failed.pk]},
            follow=True,
        )

    # then
    failed.refresh_from_db()
    assert (failed.status, failed.next_attempt_at, failed.attempts) == ("pending", resent_at, 1)
    assert "1 delivery(ies) will be sent again." in response.content.decode()
    assert Delivery.objects.get(pk=pending.pk).next_attempt_at == NOW + timedelta(hours=1)


def test_events_deliveries_and_attempts_are_read_only(admin_client, webhooks):
    # given
    attempt = DeliveryAttempt.objects.get()

    # when
    answers = [
        page(admin_client, "events_event_add").status_code,
        page(admin_client, "events_delivery_add").status_code,
        page(admin_client, "events_deliveryattempt_add").status_code,
        admin_client.post(
            reverse("admin:events_event_delete", args=[webhooks["quote"].id]), {"post": "yes"}
        ).status_code,
        admin_client.post(
            reverse("admin:events_delivery_change", args=[webhooks["failed"].pk]),
            {"status": "succeeded"},
        ).status_code,
    ]

    # then
    assert answers == [403, 403, 403, 403, 403]
    assert Event.objects.count() == 2
    assert Delivery.objects.get(pk=webhooks["failed"].pk).status == "failed"
    assert rows(page(admin_client, "events_deliveryattempt_changelist")) == [
        {
            "id": str(attempt.pk),
            "delivery": str(webhooks["failed"]),
            "attempted_at": "March 2, 2026, 9 a.m.",
            "status_code": "503",
            "duration_ms": "42",
            "error": "-",
        }
    ]
