"""Demo history for ``manage.py seed_demo``: about three months of business played through the
real services, each call at its own moment of the past (their ``now``), so the ledger, the
invoices and the capacity ledger agree by construction.

The history ends at ``cutoff``, today's midnight (UTC), and starts on the first day of the
month three months before (never before the catalogue's contracts begin). Day by day: the
demo tenants (``marketplace/demo_history.py``) book every pool, some through quotes, one quote
lapses, a few reservations are extended or cancelled; an outage found late moves one
reservation and takes hours from others, a backup pool is recalled with notice; the billing
run meters usage nightly and issues each month's invoices on the 3rd, with the SLA credits;
tenants pay by transfer or from prepaid top-ups, one leaves an invoice unpaid (overdue), one
gets a goodwill credit note. Two tenants have webhook endpoints for the last weeks: one a
receiver that takes everything, one on a closed local port whose deliveries fail. Bookings
reach 30 days past the cutoff; one outage is still open and maintenance is planned.

Deterministic (fixed seeds, whole hours relative to the cutoff) and run once: the history
exists when its first tenant does, and a second run changes nothing."""

import heapq
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import cast

import httpx
from django.conf import settings
from django.db.models import Count, Min

from billing import selectors
from billing.models import CreditNote, FxRate, Invoice, LedgerEntry
from billing.services.corrections import usage_corrections_apply
from billing.services.credit_notes import credit_note_create
from billing.services.invoicing import invoices_draft, invoices_finalize_due, month_start
from billing.services.metering import meter_usage
from billing.services.payments import invoice_payment_record, top_up_create
from billing.services.sla import sla_credits_issue
from capacity.models import CapacityPool, Incident
from capacity.services import pool_update
from core.money import round_money
from core.timeutils import utcnow
from events.delivery import deliveries_send_due
from events.models import Delivery
from events.services import endpoint_create
from marketplace import demo_history
from marketplace.demo_history import DAY, HOUR, PlannedBooking
from marketplace.models import Reservation, Tenant
from marketplace.services.booking import (
    BookingRequest,
    quote_confirm,
    quote_create,
    reservation_cancel,
    reservation_create,
    reservation_extend,
    reservations_advance,
)
from marketplace.services.displacement import (
    incident_close,
    incident_record,
    incidents_displace_due,
)

HISTORY_MONTHS = 3
# EUR in USD (the reporting currency) from each month of the history on.
EUR_RATES = ("1.0850", "1.0920", "1.0780", "1.0810", "1.0760")
PAYMENT_DELAY_DAYS = {"orbital-robotics": 9, "helix-bio": 20, "kestrel-ai": 10}
# Atelier Vision pays by transfer too; Nordlicht Labs is prepaid.
PAYMENT_DELAY_DAYS["atelier-vision"] = 25
# Nordlicht Labs: (days after the start, EUR), ahead of what each month costs it.
TOP_UPS = ((0, "200000.00"), (30, "150000.00"), (60, "150000.00"), (90, "150000.00"))
RECEIVER_URL = "https://hooks.orbital-robotics.example/gpu-marketplace"
FAILING_URL = "http://127.0.0.1:9/kestrel/webhooks"  # nothing listens on the discard port


class DemoTransport(httpx.BaseTransport):
    """The demo's HTTP: the demo receivers' hosts (``.example``, which never resolve) answer
    204 here, in the process; anything else goes out for real (the failing endpoint's closed
    local port refuses the connection)."""

    def __init__(self) -> None:
        self._network = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host.endswith(".example"):
            return httpx.Response(204)
        return self._network.handle_request(request)

    def close(self) -> None:
        self._network.close()


@dataclass
class _Timeline:
    """Actions ordered by (moment, priority, insertion): billing before the lifecycle, the
    lifecycle before new bookings, as the beat jobs would have run by then."""

    queue: list = field(default_factory=list)
    counter: itertools.count = field(default_factory=itertools.count)

    def at(self, moment: datetime, priority: int, action: Callable[[], object]) -> None:
        heapq.heappush(self.queue, (moment, priority, next(self.counter), action))


class History:
    def __init__(self, cutoff: datetime, start: datetime) -> None:
        self.cutoff, self.start = cutoff, start
        self.timeline = _Timeline()
        self.tenants: dict[str, Tenant] = {}
        self.reservations: dict[str, Reservation] = {}
        self.transport = DemoTransport()
        self.failing_endpoint = False
        self.advanced: set[datetime] = set()

    # --- the plan ------------------------------------------------------------------------------

    def plan(self) -> None:
        cutoff, start, at = self.cutoff, self.start, self.timeline.at
        bookings = demo_history.booking_plan(start=start, cutoff=cutoff)
        for booking in bookings:
            at(booking.created, 3, lambda b=booking: self.book(b))
            self._lifecycle(booking)
        self._stories(bookings)
        day = start + DAY
        while day <= cutoff:  # the nightly billing run; invoices are issued on the 3rd
            at(day, 0, lambda d=day: self.billing_run(d, finalize=d.day == 3 or d == cutoff))
            day += DAY
        for days, amount in TOP_UPS:
            moment = start + days * DAY + 10 * HOUR
            at(moment, 4, lambda m=moment, a=amount: self.top_up("nordlicht-labs", a, m))
        at(cutoff - 28 * DAY, 4, self.receiver_create)
        at(cutoff - 70 * HOUR, 4, self.failing_endpoint_create)

    def _stories(self, bookings: list[PlannedBooking]) -> None:
        cutoff, start, at = self.cutoff, self.start, self.timeline.at
        # Reservations changed later: every 11th extended a day after it starts, three
        # cancelled (two days ahead: free; six hours ahead and half way: with a fee).
        past = [b for b in bookings if b.end <= cutoff - 2 * DAY]
        for booking in past[5::11]:
            moment = booking.start + DAY
            at(moment, 5, lambda b=booking, m=moment: self.extend(b, m))
        for booking, offset in zip(past[8::29], (-48, -6, 72), strict=False):
            moment = max(booking.start + offset * HOUR, booking.created + HOUR)
            at(moment, 5, lambda b=booking, m=moment: self.cancel(b, m))
        # A quote nobody confirms: it lapses after QUOTE_HOLD_MINUTES.
        lapsed = PlannedBooking(
            "lapsed-quote",
            "helix-bio",
            cutoff - 9 * DAY,
            "h200-sxm-141gb",
            16,
            cutoff - 6 * DAY,
            cutoff - 4 * DAY,
            pool="cw-use04-h200-a",
        )
        at(lapsed.created, 3, lambda: self.quote_only(lapsed))
        self._advance(lapsed.created + HOUR)

        # An outage found three hours late takes a whole H100 pool for 12 hours: the
        # reservation free to move goes to other primary pools from the hour in progress on,
        # the hours already past (and the reservations pinned to the pool) are lost.
        outage_day = cutoff - 45 * DAY
        if outage_day - 4 * DAY >= start:
            mover = PlannedBooking(
                "outage-mover",
                "orbital-robotics",
                outage_day - 4 * DAY,
                "h100-sxm-80gb",
                32,
                outage_day - 3 * DAY,
                outage_day + 4 * DAY,
                tier="primary",
            )
            self._add(mover)
            at(outage_day + 14 * HOUR, 2, lambda: self.outage(outage_day))
        # A recall of a backup pool with twelve hours' notice, for a day.
        recall_day = cutoff - 20 * DAY
        if recall_day - 3 * DAY >= start:
            recalled = PlannedBooking(
                "recall-mover",
                "helix-bio",
                recall_day - 3 * DAY,
                "h100-sxm-80gb",
                16,
                recall_day - 2 * DAY,
                recall_day + 3 * DAY,
                tier="backup",
            )
            self._add(recalled)
            at(recall_day + 8 * HOUR, 2, lambda: self.recall(recall_day))
            at(
                recall_day + 20 * HOUR,
                2,
                lambda: incidents_displace_due(now=recall_day + 20 * HOUR),
            )
        # The failing endpoint's tenant books just after it was set up: its events fail.
        self._add(
            PlannedBooking(
                "kestrel-short",
                "kestrel-ai",
                cutoff - 66 * HOUR,
                "h100-sxm-80gb",
                8,
                cutoff - 60 * HOUR,
                cutoff - 44 * HOUR,
                pool="oci-tyo1-h100-b",
            )
        )
        # Still open at the cutoff: an outage since yesterday, maintenance next week.
        at(cutoff - 14 * HOUR, 2, self.open_incidents)
        # Contracts ending soon (renewals to decide), set before anything is booked past them.
        at(start, 2, self.contracts_shorten)

    def _add(self, booking: PlannedBooking) -> None:
        at = self.timeline.at
        at(booking.created, 3, lambda: self.book(booking))
        self._lifecycle(booking)

    def _lifecycle(self, booking: PlannedBooking) -> None:
        """The lifecycle job runs as the reservation starts and ends."""
        for moment in (booking.start, booking.end):
            self._advance(moment)

    def _advance(self, moment: datetime) -> None:
        if moment <= self.cutoff and moment not in self.advanced:
            self.advanced.add(moment)
            self.timeline.at(moment, 1, lambda: reservations_advance(now=moment))

    # --- actions -------------------------------------------------------------------------------

    def book(self, booking: PlannedBooking) -> None:
        tenant = self.tenants[booking.tenant]
        request = BookingRequest(
            gpu_model=booking.gpu_model,
            gpu_count=booking.gpus,
            start=booking.start,
            end=booking.end,
            pool=booking.pool,
            tier=booking.tier,
        )
        now = booking.created
        if booking.via_quote:
            quote, _ = quote_create(
                tenant=tenant, request=request, fingerprint=request.fingerprint(), now=now
            )
            reservation, _ = quote_confirm(
                tenant=tenant,
                quote_id=quote.pk,
                fingerprint=f"confirm:{quote.pk}",
                now=now + 5 * timedelta(minutes=1),
            )
        else:
            reservation, _ = reservation_create(
                tenant=tenant, request=request, fingerprint=request.fingerprint(), now=now
            )
        self.reservations[booking.key] = reservation

    def quote_only(self, booking: PlannedBooking) -> None:
        request = BookingRequest(
            gpu_model=booking.gpu_model,
            gpu_count=booking.gpus,
            start=booking.start,
            end=booking.end,
            pool=booking.pool,
        )
        quote_create(
            tenant=self.tenants[booking.tenant],
            request=request,
            fingerprint=request.fingerprint(),
            now=booking.created,
        )

    def extend(self, booking: PlannedBooking, now: datetime) -> None:
        reservation = self.reservations[booking.key]
        reservation_extend(
            tenant=self.tenants[booking.tenant],
            reservation_id=reservation.pk,
            new_end=reservation.end + 2 * DAY,
            fingerprint=f"extend:{reservation.pk}",
            now=now,
        )

    def cancel(self, booking: PlannedBooking, now: datetime) -> None:
        reservation_cancel(
            tenant=self.tenants[booking.tenant],
            reservation_id=self.reservations[booking.key].pk,
            cancelled_by="tenant",
            reason="Training run finished early.",
            now=now,
        )

    def outage(self, day: datetime) -> None:
        self._incident(
            "cw-use04-h100-a",
            Incident.Kind.OUTAGE,
            start=day + 11 * HOUR,
            end=day + 23 * HOUR,
            reason="Cooling failure in hall B; found by the provider's report at 14:00.",
            recorded_at=day + 14 * HOUR,
        )

    def recall(self, day: datetime) -> None:
        self._incident(
            "abl-h100-b",
            Incident.Kind.RECALL,
            start=day + 20 * HOUR,
            end=day + 44 * HOUR,
            reason="Abilene needs the H100 hall back for an internal training run.",
            recorded_at=day + 8 * HOUR,
        )

    def _incident(
        self,
        slug: str,
        kind: str,
        *,
        start: datetime,
        end: datetime,
        reason: str,
        recorded_at: datetime,
    ) -> None:
        """All of the pool's GPUs out in [start, end), recorded at ``recorded_at`` (the
        displacement runs then), closed at ``end``."""
        pool = CapacityPool.objects.get(slug=slug)
        incident = incident_record(
            pool=pool,
            kind=kind,
            gpus=pool.total_gpus,
            start=start,
            end=end,
            reason=reason,
            recorded_by="operator",
            now=recorded_at,
        )
        self.timeline.at(end, 2, lambda: incident_close(incident=incident, now=end))

    def open_incidents(self) -> None:
        now = self.cutoff - 14 * HOUR
        incident_record(
            pool=CapacityPool.objects.get(slug="oci-ash1-mi300x-a"),
            kind=Incident.Kind.OUTAGE,
            gpus=32,
            start=now - 2 * HOUR,
            reason="Four nodes down after a firmware update; provider investigating.",
            recorded_by="operator",
            now=now,
        )
        incident_record(
            pool=CapacityPool.objects.get(slug="gcp-usc1-h100-a"),
            kind=Incident.Kind.MAINTENANCE,
            gpus=96,
            start=self.cutoff + 5 * DAY + 2 * HOUR,
            end=self.cutoff + 5 * DAY + 8 * HOUR,
            reason="Planned network maintenance.",
            recorded_by="operator",
            now=now,
        )

    def contracts_shorten(self) -> None:
        for slug, days in (("oci-tyo1-h100-b", 45), ("cw-eun01-mi300x-b", 80)):
            pool_update(
                pool=CapacityPool.objects.get(slug=slug),
                available_until=self.cutoff + days * DAY,
                now=self.start,
            )

    def billing_run(self, now: datetime, *, finalize: bool) -> None:
        """What the beat's billing tasks do by ``now``: meter, correct, draft; on the 3rd (and
        at the cutoff) issue what is due, then the SLA credits. Payments follow each issue.
        Metered weekly and before invoicing, not hourly: each run re-reads a day back, and
        fewer runs keep the seed fast; the usage is the same."""
        if not finalize and now.day not in (1, 8, 15, 22):
            return
        meter_usage(until=now)
        usage_corrections_apply(now=now)
        if not finalize and now.day != 1:
            return
        invoices_draft(now=now)
        if not finalize:
            return
        invoices_finalize_due(now=now)
        sla_credits_issue(now=now)
        for invoice in Invoice.objects.filter(finalized_at=now).select_related("tenant"):
            self._settle_later(invoice)

    def _settle_later(self, invoice: Invoice) -> None:
        slug = invoice.tenant.slug
        issued = cast(datetime, invoice.finalized_at)  # an issued invoice has its date
        first = invoice.period_start == month_start(self.start)
        if slug == "atelier-vision" and first:
            noted = issued + 5 * DAY
            self.timeline.at(noted, 4, lambda: self.goodwill(invoice, noted))
        if slug == "kestrel-ai" and invoice.period_start == month_start(self.start + 32 * DAY):
            return  # disputed, never paid: overdue
        delay = PAYMENT_DELAY_DAYS.get(slug)
        if delay is not None and invoice.status == Invoice.Status.FINALIZED:
            paid = issued + delay * DAY + 11 * HOUR
            self.timeline.at(paid, 4, lambda: self.pay(invoice, paid))

    def pay(self, invoice: Invoice, now: datetime) -> None:
        invoice.refresh_from_db()
        due = selectors.invoice_settlement(invoice=invoice).due
        if invoice.status != Invoice.Status.FINALIZED or due <= 0:
            return
        invoice_payment_record(
            invoice_id=invoice.pk,
            amount=due,
            reference=f"BANK-{invoice.number}",
            received_at=now,
            recorded_by="operator",
            now=now,
        )

    def goodwill(self, invoice: Invoice, now: datetime) -> None:
        credit_note_create(
            invoice_id=invoice.pk,
            amount=round_money(invoice.total * Decimal("0.05"), invoice.currency),
            reason=CreditNote.Reason.GOODWILL,
            memo="Goodwill for the slow onboarding in the first month.",
            issued_by="operator",
            now=now,
        )

    def top_up(self, slug: str, amount: str, now: datetime) -> None:
        top_up_create(
            tenant=self.tenants[slug],
            amount=Decimal(amount),
            reference=f"TOPUP-{slug}-{now:%Y%m%d}",
            memo="Bank transfer",
            now=now,
        )

    def receiver_create(self) -> None:
        endpoint_create(
            tenant_id=self.tenants["orbital-robotics"].pk,
            url=RECEIVER_URL,
            description="Orbital's event bus",
        )

    def failing_endpoint_create(self) -> None:
        # A loopback URL is allowed only where private addresses are (local and test settings).
        if not settings.WEBHOOK_ALLOW_PRIVATE_URLS:
            return
        endpoint_create(
            tenant_id=self.tenants["kestrel-ai"].pk,
            url=FAILING_URL,
            description="Staging listener (decommissioned)",
        )
        self.failing_endpoint = True

    def deliver_until(self, moment: datetime) -> None:
        """Run the delivery worker at every moment a delivery fell due up to ``moment``."""
        due = Delivery.objects.filter(status=Delivery.Status.PENDING, endpoint__enabled=True)
        while (first := due.aggregate(first=Min("next_attempt_at"))["first"]) is not None:
            if first > moment:
                return
            deliveries_send_due(now=first, transport=self.transport)

    # --- running -------------------------------------------------------------------------------

    def run(self) -> None:
        self.tenants = demo_history.tenants_create()
        rate_day = self.start
        for rate in EUR_RATES:
            if rate_day > self.cutoff:
                break
            FxRate.objects.get_or_create(
                currency="EUR",
                effective_from=rate_day.date(),
                defaults={"rate": Decimal(rate), "source": "ECB reference rate (demo)"},
            )
            rate_day = month_start(rate_day + 32 * DAY)
        self.plan()
        state = random.getstate()
        random.seed(demo_history.DEMO_SEED)  # the delivery worker's retry jitter
        http_log = logging.getLogger("httpx")
        http_level = http_log.level
        http_log.setLevel(logging.WARNING)  # a line per request would bury the summary
        try:
            while self.timeline.queue:
                moment, _, _, action = heapq.heappop(self.timeline.queue)
                if moment > self.cutoff:
                    continue
                self.deliver_until(moment)
                action()
            self.deliver_until(self.cutoff)
        finally:
            http_log.setLevel(http_level)
            random.setstate(state)
            self.transport.close()


def history_window(now: datetime | None = None) -> tuple[datetime, datetime] | None:
    """(start, cutoff) of the history as of ``now``, or None when the catalogue's contracts
    begin too late for one."""
    cutoff = (now or utcnow()).replace(hour=0, minute=0, second=0, microsecond=0)
    start = month_start(cutoff)
    for _ in range(HISTORY_MONTHS):
        start = month_start(start - DAY)
    contracts = CapacityPool.objects.aggregate(first=Min("available_from"))["first"]
    if contracts is None:
        return None
    if contracts > start:  # the first whole month of the contracts
        start = (
            contracts if month_start(contracts) == contracts else month_start(contracts + 31 * DAY)
        )
    if cutoff - start < 30 * DAY:
        return None
    return start, cutoff


def history_seed(*, now: datetime | None = None) -> list[str]:
    """Create the demo history once (see the module docstring); the lines to print."""
    if Tenant.objects.filter(slug=demo_history.MARKER_SLUG).exists():
        return ["Demo history already present (tenants and their last three months)."]
    window = history_window(now)
    if window is None:
        return ["Demo history skipped: the catalogue's contracts begin too recently."]
    history = History(cutoff=window[1], start=window[0])
    history.run()
    return summary(history)


def summary(history: History) -> list[str]:
    tenants = list(history.tenants.values())
    reservations = Reservation.objects.filter(tenant__in=tenants)
    invoices = Invoice.objects.filter(tenant__in=tenants)
    statuses = dict(
        reservations.order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    overdue = (
        selectors.with_settlement(invoices.filter(status=Invoice.Status.FINALIZED))
        .filter(amount_due__gt=0, due_at__lt=history.cutoff)
        .count()
    )
    failed = Delivery.objects.filter(status=Delivery.Status.FAILED).count()
    ledger = LedgerEntry.objects.filter(tenant__in=tenants).count()
    return [
        f"Demo history {history.start:%Y-%m-%d} to {history.cutoff:%Y-%m-%d}: "
        f"{len(tenants)} tenants (USD and EUR), {reservations.count()} reservations "
        f"({', '.join(f'{n} {status}' for status, n in sorted(statuses.items()))}), "
        f"{reservations.filter(start__gt=history.cutoff).count()} starting later.",
        f"Billing: {invoices.exclude(status=Invoice.Status.DRAFT).count()} invoices issued "
        f"({invoices.filter(status=Invoice.Status.PAID).count()} paid, {overdue} overdue), "
        f"{invoices.filter(status=Invoice.Status.DRAFT).count()} drafts, "
        f"{CreditNote.objects.filter(tenant__in=tenants).count()} credit notes, "
        f"{ledger} ledger entries.",
        f"Incidents: {Incident.objects.count()}; webhook deliveries: "
        f"{Delivery.objects.count()} ({failed} failed).",
    ]
