"""``manage.py capacity_incident open|close|list`` for scripts, and the beat job that displaces
incidents when they fall due.

The clock is frozen at NOW (2026-12-01 08:30 UTC); bookings are on Monday 2026-12-07 from
09:00. pool-a has 32 GPUs (4 nodes of 8)."""

import io
import json
from datetime import timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask

from capacity.models import Incident
from config.celery_app import app
from marketplace.services.displacement import incident_record
from marketplace.tasks import displace_incidents
from tests.factories import CapacityPoolFactory
from tests.marketplace.conftest import MONDAY_9, NOW, booking
from tests.marketplace.test_booking import book
from tests.marketplace.test_concurrency import ledger_violations
from tests.marketplace.test_incidents import placements

pytestmark = pytest.mark.django_db


def at(hour: int):
    return MONDAY_9.replace(hour=hour)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("capacity_incident", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def open_outage(*args: str) -> str:
    return run("open", "--pool", "pool-a", "--kind", "outage", *args)


@pytest.fixture
def moved(frozen_now, tenant, pool):
    """8 GPUs booked on pool-a 09-13 and room on pool-b."""
    CapacityPoolFactory(slug="pool-b")
    return book(tenant, booking(gpus=8, start=at(9), hours=4))


def test_open_records_the_incident_and_says_what_it_displaced(moved, tenant):
    out = open_outage(
        "--gpus",
        "32",
        "--start",
        "2026-12-07T11:00Z",
        "--end",
        "2026-12-07T13:00+00:00",
        "--reason",
        "PDU failure",
    )

    incident = Incident.objects.get()
    assert (incident.gpus, incident.start, incident.end) == (32, at(11), at(13))
    assert (incident.reason, incident.recorded_by) == ("PDU failure", "command:capacity_incident")
    assert placements(moved) == [("pool-a", 9, 11, 8), ("pool-b", 11, 13, 8)]
    assert out.splitlines() == [
        f"Incident {incident.pk} recorded: outage of 32 GPUs on pool-a from 2026-12-07T11:00Z "
        "until 2026-12-07T13:00Z.",
        "Displaced 1 reservation(s): 16 GPU-hours moved, 0 GPU-hours lost.",
        f"  {moved.pk} ({tenant.slug}): 16 GPU-hours moved, 0 lost",
    ]
    assert ledger_violations() == []


def test_open_prints_json_for_machines(moved, tenant):
    out = open_outage(
        "--gpus", "32", "--start", "2026-12-07T12:00+01:00", "--recorded-by", "ops-bot", "--json"
    )

    incident = Incident.objects.get()
    assert incident.start == at(11)  # 12:00+01:00
    assert incident.recorded_by == "ops-bot"
    assert json.loads(out) == {
        "id": incident.pk,
        "pool": "pool-a",
        "kind": "outage",
        "gpus": 32,
        "start": "2026-12-07T11:00:00+00:00",
        "end": None,
        "reason": "",
        "short_notice": False,
        "closed_at": None,
        "displaced_at": "2026-12-01T08:30:00+00:00",
        "reservations": 1,
        "gpu_hours_moved": 16,  # 11-13, to the end of the reservation
        "gpu_hours_lost": 0,
        "notified": 0,
        "displacements": [
            {
                "reservation": str(moved.pk),
                "tenant": tenant.slug,
                "gpu_hours_moved": 16,
                "gpu_hours_lost": 0,
            }
        ],
    }


def test_opening_a_recall_with_notice_tells_the_tenants_and_moves_nothing_yet(frozen_now, tenant):
    CapacityPoolFactory(slug="backup", tier="backup", recall_notice_hours=2)
    reservation = book(tenant, booking(gpus=8, start=at(9), hours=4))

    out = run(
        "open",
        "--pool",
        "backup",
        "--kind",
        "recall",
        "--gpus",
        "32",
        "--start",
        "2026-12-07T11:00Z",
    )

    incident = Incident.objects.get()
    assert out.splitlines() == [
        f"Incident {incident.pk} recorded: backup recall of 32 GPUs on backup from "
        "2026-12-07T11:00Z until open.",
        "Recall notice sent for 1 reservation(s); they are displaced when it starts, at "
        "2026-12-07T11:00Z.",
    ]
    assert placements(reservation) == [("backup", 9, 13, 8)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--pool", "nowhere", "--gpus", "8", "--start", "2026-12-07T11:00Z"],
            "No capacity pool with slug 'nowhere'.",
        ),
        (
            ["--pool", "pool-a", "--gpus", "8", "--start", "2026-12-07T11:00"],
            "--start '2026-12-07T11:00' has no UTC offset; write it as e.g. "
            "2026-12-07T11:00Z (UTC) or 2026-12-07T11:00+01:00, so that it cannot be read in "
            "the wrong time zone.",
        ),
        (
            ["--pool", "pool-a", "--gpus", "8", "--start", "Monday"],
            "--start 'Monday' is not an ISO 8601 time, e.g. 2026-12-07T09:00Z.",
        ),
        (
            [
                "--pool",
                "pool-a",
                "--gpus",
                "8",
                "--start",
                "2026-12-07T11:00Z",
                "--end",
                "2026-12-07T10:00Z",
            ],
            "The incident must end after it starts. --end: Must be after start.",
        ),
        (
            ["--pool", "pool-a", "--gpus", "0", "--start", "2026-12-07T11:00Z"],
            "An incident takes between 1 and the pool's 32 GPUs. --gpus: 1..32.",
        ),
        (
            ["--pool", "pool-a", "--gpus", "8", "--start", "2026-12-07T11:30Z"],
            "Incidents start and end on whole UTC hours. --start: Must fall on a whole UTC hour.",
        ),
    ],
    ids=["unknown-pool", "naive", "not-iso", "end-before-start", "no-gpus", "off-the-hour"],
)
def test_open_refuses_bad_input_with_the_reason_and_records_nothing(moved, args, message):
    with pytest.raises(CommandError) as refused:
        run("open", "--kind", "outage", *args)

    assert str(refused.value) == message
    assert refused.value.returncode == 1
    assert not Incident.objects.exists()
    assert placements(moved) == [("pool-a", 9, 13, 8)]


def test_close_gives_the_gpus_back_from_the_next_hour_and_only_once(frozen_now, pool):
    incident = incident_record(pool=pool, kind="outage", gpus=8, start=NOW.replace(minute=0))

    first = run("close", str(incident.pk))
    again = run("close", str(incident.pk), "--end", "2026-12-01T12:00Z")

    incident.refresh_from_db()
    assert (incident.end, incident.closed_at) == (NOW.replace(hour=9, minute=0), NOW)
    assert (
        first == f"Incident {incident.pk} closed: pool-a's GPUs are back from 2026-12-01T09:00Z.\n"
    )
    assert again == (
        f"Incident {incident.pk} was already closed: its GPUs are back from 2026-12-01T09:00Z.\n"
    )


def test_close_at_a_given_hour_and_its_refusals(frozen_now, pool):
    incident = incident_record(pool=pool, kind="outage", gpus=8, start=at(9))

    with pytest.raises(CommandError, match=r"^No incident 0\.$"):
        run("close", "0")
    with pytest.raises(CommandError, match="before the incident's start"):
        run("close", str(incident.pk), "--end", "2026-12-07T08:00Z")
    with pytest.raises(CommandError, match="has no UTC offset"):
        run("close", str(incident.pk), "--end", "2026-12-07T12:00")
    out = run("close", str(incident.pk), "--end", "2026-12-07T12:00Z", "--json")

    incident.refresh_from_db()
    assert incident.end == at(12)
    assert json.loads(out)["end"] == "2026-12-07T12:00:00+00:00"
    assert json.loads(out)["already_closed"] is False


def test_list_shows_incidents_with_what_they_moved_and_lost(moved, pool):
    # given a closed outage that moved 16 GPU-hours and an open one on another pool
    closed = incident_record(pool=pool, kind="outage", gpus=32, start=at(11), end=at(13))
    other = CapacityPoolFactory(slug="pool-c")
    still_open = incident_record(pool=other, kind="maintenance", gpus=8, start=at(14))

    everything = run("list")
    only_open = run("list", "--open")
    on_pool_a = run("list", "--pool", "pool-a", "--json")

    width = max(len("ID"), len(str(closed.pk)), len(str(still_open.pk)))
    assert everything.splitlines() == [
        "ID".ljust(width) + "  POOL    KIND         GPUS  START              END                "
        "MOVED GPU-H  LOST GPU-H",
        f"{still_open.pk}".ljust(width) + "  pool-c  maintenance  8     2026-12-07T14:00Z  open"
        "               0            0",
        f"{closed.pk}".ljust(width) + "  pool-a  outage       32    2026-12-07T11:00Z  "
        "2026-12-07T13:00Z  16           0",
    ]
    assert [line.split()[0] for line in only_open.splitlines()] == ["ID", str(still_open.pk)]
    assert [(row["id"], row["gpu_hours_moved"], row["end"]) for row in json.loads(on_pool_a)] == [
        (closed.pk, 16, "2026-12-07T13:00:00+00:00")
    ]
    with pytest.raises(CommandError, match="No capacity pool with slug 'nowhere'"):
        run("list", "--pool", "nowhere")


def test_list_with_no_incidents_says_so(db):
    assert run("list") == "No incidents.\n"
    assert json.loads(run("list", "--json")) == []


# --- the beat job ------------------------------------------------------------------------------


def test_the_displacement_job_moves_a_recall_when_it_starts(tenant):
    # given a recall of a backup pool recorded at 08:00 for 10:00, and room on pool-b
    backup = CapacityPoolFactory(slug="backup", tier="backup", recall_notice_hours=2)
    reservation = book(tenant, booking(gpus=16, start=at(9), hours=4))
    CapacityPoolFactory(slug="pool-b")
    incident_record(pool=backup, kind="recall", gpus=32, start=at(10), now=at(8))

    # when the job runs before the recall starts, nothing moves
    with time_machine.travel(at(9) + timedelta(minutes=59), tick=False):
        assert displace_incidents() == {
            "incidents": 0,
            "done": 0,
            "reservations": 0,
            "gpu_hours_moved": 0,
            "gpu_hours_lost": 0,
            "gpu_hours_left": 0,
        }
    assert placements(reservation) == [("backup", 9, 13, 16)]

    # when it runs at the recall hour, the reservation runs on pool-b from 10:00
    with time_machine.travel(at(10), tick=False):
        assert displace_incidents() == {
            "incidents": 1,
            "done": 1,
            "reservations": 1,
            "gpu_hours_moved": 16 * 3,
            "gpu_hours_lost": 0,
            "gpu_hours_left": 0,
        }
    assert placements(reservation) == [("backup", 9, 10, 16), ("pool-b", 10, 13, 16)]
    assert ledger_violations() == []


def test_the_displacement_job_is_scheduled_every_minute_and_known_to_the_workers():
    task = PeriodicTask.objects.get(task="marketplace.tasks.displace_incidents")

    assert (task.enabled, task.interval.every, task.interval.period) == (True, 1, "minutes")
    app.loader.import_default_modules()
    assert "marketplace.tasks.displace_incidents" in app.tasks
    assert displace_incidents.acks_late is True
