"""``python manage.py run_billing [--until ISO] [--finalize YYYY-MM]``: what the beat tasks do,
by hand, with progress bars: meter usage up to ``--until`` (default now; never in the future:
a later ``--until`` is refused before anything is metered), apply the usage corrections of
incidents recorded after metering, build the drafts, finalize the drafts past their grace
period — and with ``--finalize``, that month's drafts, which is refused until the month's end
plus BILLING_GRACE_DAYS — and issue the SLA credits of the months closed."""

import sys
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from billing.services.corrections import usage_corrections_apply
from billing.services.invoicing import (
    invoices_draft,
    invoices_finalize_due,
    invoices_finalize_month,
)
from billing.services.metering import meter_usage
from billing.services.sla import sla_credits_issue
from core.errors import ApplicationError
from core.timeutils import utcnow


def _parse_until(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"--until {value!r} is not ISO 8601 (e.g. 2026-04-03T00:00Z).") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parse_month(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m").replace(tzinfo=UTC)
    except ValueError as exc:
        raise CommandError(f"--finalize {value!r} is not a month like 2026-03.") from exc


class Command(BaseCommand):
    help = (
        "Meter usage, apply usage corrections, build draft invoices, finalize due invoices and "
        "issue SLA credits (like the beat tasks)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--until",
            help="Meter and invoice as of this instant (ISO 8601; not in the future). "
            "Default: now.",
        )
        parser.add_argument(
            "--finalize",
            metavar="YYYY-MM",
            help="Also finalize this month's drafts (once the month's end plus the billing "
            "grace period has passed).",
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bars.")

    def handle(self, *args, until: str | None, finalize: str | None, no_progress: bool, **kw):
        now = _parse_until(until) if until else utcnow()
        month = _parse_month(finalize) if finalize else None

        def progress(desc: str, unit: str = "tenant"):
            def start(total: int):
                bar = tqdm(total=total, desc=desc, unit=unit, disable=no_progress, file=sys.stderr)

                def tick(done: int) -> None:
                    bar.update(done)
                    if bar.n >= total:
                        bar.close()

                if not total:
                    bar.close()
                return tick

            return start

        try:
            metered = meter_usage(until=now)  # refuses an --until in the future, metering nothing
        except ApplicationError as exc:
            raise CommandError(f"Nothing metered: {exc.detail}") from exc
        self.stdout.write(
            f"Metered until {metered.until:%Y-%m-%dT%H:%MZ}: {metered.usage_created} usage "
            f"records, {metered.charges_created} charges."
        )
        corrected = usage_corrections_apply(now=now, progress=progress("Usage corrections"))
        self.stdout.write(f"Usage corrections: {corrected.done} displacement(s) applied.")
        drafted = invoices_draft(now=now, progress=progress("Drafts"))
        self.stdout.write(f"Drafts built: {drafted.done}.")
        finalized = invoices_finalize_due(
            now=now, progress=progress("Finalize (grace over)", "invoice")
        )
        self.stdout.write(f"Finalized after grace: {finalized.done}.")
        failed = corrected.failed + drafted.failed + finalized.failed
        if month is not None:
            try:
                forced = invoices_finalize_month(
                    period_start=month,
                    now=now,
                    progress=progress(f"Finalize {finalize}", "invoice"),
                )
            except ApplicationError as exc:
                raise CommandError(exc.detail) from exc
            self.stdout.write(f"Finalized for {finalize}: {forced.done}.")
            failed += forced.failed
        credited = sla_credits_issue(now=now)
        self.stdout.write(f"SLA credit notes issued: {credited.done}.")
        failed += credited.failed
        if failed:
            raise CommandError(f"{len(failed)} failed (see the log): {', '.join(failed[:10])}")
