"""``python manage.py capacity_incident open|close|list``: capacity incidents from scripts.

``open`` records an incident the way the admin's incident screen does
(``marketplace.services.displacement.incident_record``): the GPUs leave the capacity ledger and
the reservations that no longer fit are moved to other pools, or lose those GPUs where there is
no room; a recall with notice tells its tenants now and is displaced when it starts. ``close``
gives the GPUs back; ``list`` shows incidents with the GPU-hours they moved and lost.

Times are ISO 8601 with a UTC offset (``2026-12-07T09:00Z``, ``2026-12-07T10:00+01:00``) on whole
UTC hours; a time without an offset is refused rather than guessed. ``--json`` prints one JSON
document instead of text. Refusals exit with status 1 and the reason on stderr."""

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from capacity.models import CapacityPool, Incident
from core.errors import ApplicationError
from core.timeutils import utcnow
from marketplace.models import Displacement
from marketplace.services.displacement import (
    affected_reservations,
    incident_close,
    incident_record,
)


def _moment(option: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"{option} {value!r} is not an ISO 8601 time, e.g. 2026-12-07T09:00Z."
        ) from None
    if moment.tzinfo is None:
        raise CommandError(
            f"{option} {value!r} has no UTC offset; write it as e.g. {value}Z (UTC) or "
            f"{value}+01:00, so that it cannot be read in the wrong time zone."
        )
    return moment


def _refusal(exc: ApplicationError) -> CommandError:
    """The service's message, and what it says about each option."""
    details = []
    for name, problems in (exc.fields or {}).items():
        for problem in problems if isinstance(problems, list | tuple) else [problems]:
            message = problem.get("message", "") if isinstance(problem, dict) else problem
            details.append(f"--{name}: {message}")
    return CommandError(" ".join([exc.detail, *details]))


def _pool(slug: str) -> CapacityPool:
    try:
        return CapacityPool.objects.get(slug=slug)
    except CapacityPool.DoesNotExist:
        raise CommandError(f"No capacity pool with slug {slug!r}.") from None


def _hour(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%dT%H:%MZ}" if moment is not None else "open"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _displaced(incidents: list[Incident]) -> dict[int, list[dict[str, Any]]]:
    """Per incident, what it did to each reservation: GPU-hours moved and lost (one query)."""
    per_reservation: dict[int, dict[Any, dict[str, Any]]] = defaultdict(dict)
    rows = (
        Displacement.objects.filter(incident__in=[incident.pk for incident in incidents])
        .select_related("reservation__tenant")
        .order_by("incident_id", "start", "reservation_id")
    )
    for row in rows:
        entry = per_reservation[row.incident_id].setdefault(
            row.reservation_id,
            {
                "reservation": str(row.reservation_id),
                "tenant": row.reservation.tenant.slug,
                "gpu_hours_moved": 0,
                "gpu_hours_lost": 0,
            },
        )
        entry["gpu_hours_moved"] += row.gpu_hours_moved
        entry["gpu_hours_lost"] += row.gpu_hours_lost
    return {incident_id: list(entries.values()) for incident_id, entries in per_reservation.items()}


def _summary(incident: Incident, displaced: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": incident.pk,
        "pool": incident.pool.slug,
        "kind": incident.kind,
        "gpus": incident.gpus,
        "start": _iso(incident.start),
        "end": _iso(incident.end),
        "reason": incident.reason,
        "short_notice": incident.short_notice,
        "closed_at": _iso(incident.closed_at),
        "displaced_at": _iso(incident.displaced_at),
        "reservations": len(displaced),
        "gpu_hours_moved": sum(entry["gpu_hours_moved"] for entry in displaced),
        "gpu_hours_lost": sum(entry["gpu_hours_lost"] for entry in displaced),
    }


class Command(BaseCommand):
    help = (
        "Record (open), close or list capacity incidents. Opening one moves the reservations it "
        "hits to other pools, or shrinks them where there is no room."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="open|close|list")

        opened = actions.add_parser("open", help="Record an incident and displace what it hits.")
        opened.add_argument("--pool", required=True, help="The pool's slug.")
        opened.add_argument("--kind", required=True, choices=Incident.Kind.values)
        opened.add_argument("--gpus", required=True, type=int, help="GPUs out of service.")
        opened.add_argument(
            "--start", required=True, help="First hour out, e.g. 2026-12-07T09:00Z."
        )
        opened.add_argument("--end", help="First hour back; leave out while it lasts.")
        opened.add_argument("--reason", default="", help="What happened, for the record.")
        opened.add_argument(
            "--recorded-by", default="command:capacity_incident", help="Who records it."
        )
        opened.add_argument("--json", dest="as_json", action="store_true", help="Print JSON.")

        closed = actions.add_parser("close", help="Give an incident's GPUs back.")
        closed.add_argument("incident_id", metavar="ID", type=int, help="The incident's id.")
        closed.add_argument("--end", help="First hour back (default: the next whole hour).")
        closed.add_argument("--json", dest="as_json", action="store_true", help="Print JSON.")

        listed = actions.add_parser("list", help="List incidents, newest first.")
        listed.add_argument(
            "--open", dest="only_open", action="store_true", help="Only those without an end."
        )
        listed.add_argument("--pool", help="Only this pool's (slug).")
        listed.add_argument("--json", dest="as_json", action="store_true", help="Print JSON.")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        {"open": self._open, "close": self._close, "list": self._list}[action](**options)

    def _emit(self, document: object) -> None:
        self.stdout.write(json.dumps(document, indent=2))

    def _open(
        self,
        *,
        pool: str,
        kind: str,
        gpus: int,
        start: str,
        end: str | None,
        reason: str,
        recorded_by: str,
        as_json: bool,
        **_: Any,
    ) -> None:
        fields = {
            "pool": _pool(pool),
            "kind": kind,
            "gpus": gpus,
            "start": _moment("--start", start),
            "end": _moment("--end", end) if end else None,
        }
        try:
            incident = incident_record(**fields, reason=reason, recorded_by=recorded_by)
        except ApplicationError as exc:
            raise _refusal(exc) from None
        incident.refresh_from_db()
        displaced = _displaced([incident]).get(incident.pk, [])
        summary = _summary(incident, displaced)
        # A recall is displaced when it starts; until then its tenants have been notified.
        pending = incident.kind == Incident.Kind.RECALL and incident.start > utcnow()
        notified = len(affected_reservations(incident)) if pending else 0
        if as_json:
            self._emit({**summary, "notified": notified, "displacements": displaced})
            return
        self.stdout.write(
            f"Incident {incident.pk} recorded: {incident.get_kind_display().lower()} of "
            f"{incident.gpus} GPUs on {incident.pool.slug} from {_hour(incident.start)} until "
            f"{_hour(incident.end)}" + (" (short notice)." if incident.short_notice else ".")
        )
        if pending:
            self.stdout.write(
                f"Recall notice sent for {notified} reservation(s); they are displaced when it "
                f"starts, at {_hour(incident.start)}."
            )
            return
        self.stdout.write(
            f"Displaced {summary['reservations']} reservation(s): "
            f"{summary['gpu_hours_moved']} GPU-hours moved, "
            f"{summary['gpu_hours_lost']} GPU-hours lost."
        )
        for entry in displaced:
            self.stdout.write(
                f"  {entry['reservation']} ({entry['tenant']}): {entry['gpu_hours_moved']} "
                f"GPU-hours moved, {entry['gpu_hours_lost']} lost"
            )
        if incident.displaced_at is None:
            self.stderr.write(
                "Some booked GPUs are still to be moved (their reservations were busy); the "
                "displacement job finishes within a minute."
            )

    def _close(self, *, incident_id: int, end: str | None, as_json: bool, **_: Any) -> None:
        moment = _moment("--end", end) if end else None
        try:
            incident = Incident.objects.select_related("pool").get(pk=incident_id)
        except Incident.DoesNotExist:
            raise CommandError(f"No incident {incident_id}.") from None
        already = incident.closed_at is not None
        try:
            incident = incident_close(incident=incident, end=moment)
        except ApplicationError as exc:
            raise _refusal(exc) from None
        if as_json:
            self._emit({**_summary(incident, []), "already_closed": already})
            return
        if already:
            self.stdout.write(
                f"Incident {incident.pk} was already closed: its GPUs are back from "
                f"{_hour(incident.end)}."
            )
        elif incident.end == incident.start:
            self.stdout.write(f"Incident {incident.pk} withdrawn before it began.")
        else:
            self.stdout.write(
                f"Incident {incident.pk} closed: {incident.pool.slug}'s GPUs are back from "
                f"{_hour(incident.end)}."
            )

    def _list(self, *, only_open: bool, pool: str | None, as_json: bool, **_: Any) -> None:
        incidents = Incident.objects.select_related("pool")
        if only_open:
            incidents = incidents.filter(end__isnull=True)
        if pool is not None:
            incidents = incidents.filter(pool=_pool(pool))
        incidents = list(incidents)
        displaced = _displaced(incidents)
        summaries = [_summary(incident, displaced.get(incident.pk, [])) for incident in incidents]
        if as_json:
            self._emit(summaries)
            return
        if not summaries:
            self.stdout.write("No incidents.")
            return
        header = ("ID", "POOL", "KIND", "GPUS", "START", "END", "MOVED GPU-H", "LOST GPU-H")
        table = [header] + [
            (
                str(row["id"]),
                row["pool"],
                row["kind"],
                str(row["gpus"]),
                _hour(incident.start),
                _hour(incident.end),
                str(row["gpu_hours_moved"]),
                str(row["gpu_hours_lost"]),
            )
            for row, incident in zip(summaries, incidents, strict=True)
        ]
        widths = [max(len(line[column]) for line in table) for column in range(len(header))]
        for line in table:
            self.stdout.write(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(line, widths, strict=True)
                ).rstrip()
            )
