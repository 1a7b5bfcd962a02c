"""Events are immutable (a PostgreSQL trigger refuses UPDATE; the retention job deletes), and
the beat schedule of the delivery and retention jobs (editable in the admin)."""

from django.db import migrations

IMMUTABLE_EVENTS = """
CREATE OR REPLACE FUNCTION events_event_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable (event %)', OLD.id USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER events_event_immutable BEFORE UPDATE ON events_event
    FOR EACH ROW EXECUTE FUNCTION events_event_immutable();
"""
DROP_IMMUTABLE_EVENTS = """
DROP TRIGGER IF EXISTS events_event_immutable ON events_event;
DROP FUNCTION IF EXISTS events_event_immutable();
"""


def immutable_events(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(IMMUTABLE_EVENTS, params=None)


def mutable_events(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_IMMUTABLE_EVENTS, params=None)


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_10_seconds, _ = IntervalSchedule.objects.get_or_create(every=10, period="seconds")
    PeriodicTask.objects.get_or_create(
        name="Deliver webhooks (retries and anything not sent at once)",
        defaults={"task": "events.tasks.deliver_webhooks", "interval": every_10_seconds},
    )
    daily, _ = CrontabSchedule.objects.get_or_create(
        minute="30", hour="2", day_of_week="*", day_of_month="*", month_of_year="*",
        timezone="UTC",
    )
    PeriodicTask.objects.get_or_create(
        name="Prune events past their retention",
        defaults={"task": "events.tasks.prune_events", "crontab": daily},
    )


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RunPython(immutable_events, mutable_events),
        migrations.RunPython(schedule, migrations.RunPython.noop),
    ]
