"""The displacement job's beat schedule (editable in the admin): every minute, move the
reservations of incidents that are due — recalls reaching their start, runs that stopped half
way."""

from django.db import migrations

NAME = "Displace reservations off incidents (due recalls, unfinished runs)"


def forwards(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=NAME,
        defaults={"task": "marketplace.tasks.displace_incidents", "interval": every_minute},
    )


def backwards(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0006_placements_backfill"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
