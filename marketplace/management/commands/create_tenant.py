"""Create a tenant and its first API key; the key is the last line of the output, alone."""

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from core.errors import ApplicationError
from core.money import round_money
from marketplace.services.tenants import api_key_create, tenant_create


def _credit_limit(value: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise CommandError(f"--credit-limit must be a number, not {value!r}.") from None
    if not amount.is_finite() or amount < 0:
        raise CommandError("--credit-limit must be zero or more.")
    return amount


def _positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise CommandError(f"{name} must be a whole number, not {value!r}.") from None
    if number < 1:
        raise CommandError(f"{name} must be at least 1.")
    return number


def _messages(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
        )
    return " ".join(exc.messages)


class Command(BaseCommand):
    help = (
        "Create a tenant and its first API key. The key is printed once, as the last line of "
        "the output, and cannot be shown again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The tenant's name, e.g. 'Acme AI'.")
        parser.add_argument("--slug", help="URL-safe identifier (default: from the name).")
        parser.add_argument(
            "--credit-limit",
            default="0",
            help="How far the account may go below zero, in the tenant's currency (default 0).",
        )
        parser.add_argument(
            "--max-gpus", help="Quota: most GPUs held at any one time (default 1024)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"].strip()
        if not name:
            raise CommandError("The tenant needs a name.")
        fields: dict[str, Any] = {"credit_limit": _credit_limit(options["credit_limit"])}
        if options["max_gpus"] is not None:
            fields["max_gpus"] = _positive_int("--max-gpus", options["max_gpus"])
        try:
            with transaction.atomic():
                tenant = tenant_create(name=name, slug=options["slug"] or None, **fields)
                key, raw_key = api_key_create(tenant=tenant)
        except ApplicationError as exc:
            raise CommandError(exc.detail) from None
        except ValidationError as exc:
            raise CommandError(f"Invalid tenant: {_messages(exc)}") from None

        self.stdout.write(
            f"Created tenant {tenant.name} (slug {tenant.slug}): credit limit "
            f"{round_money(tenant.credit_limit, tenant.currency)} {tenant.currency}, "
            f"at most {tenant.max_gpus} GPUs at once."
        )
        self.stdout.write(
            f"API key {key.prefix} follows; store it now, it is not shown again. "
            "Use it as `Authorization: Bearer <key>`."
        )
        self.stdout.write(raw_key)
