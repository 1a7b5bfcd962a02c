"""The billing schedule, as django-celery-beat rows (visible and editable in the admin):
meter hourly at :05, draft hourly at :20, finalize daily at 01:00 UTC."""

from django.db import migrations

SCHEDULES = [
    # name, task, minute, hour
    ("Billing: meter usage (hourly)", "billing.tasks.meter_usage_task", "5", "*"),
    ("Billing: build draft invoices (hourly)", "billing.tasks.draft_invoices_task", "20", "*"),
    ("Billing: finalize invoices (daily)", "billing.tasks.finalize_invoices_task", "0", "1"),
]


def forwards(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, minute, hour in SCHEDULES:
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=minute,
            hour=hour,
            day_of_week="*",
            day_of_month="*",
            month_of_year="*",
            timezone="UTC",
        )
        PeriodicTask.objects.get_or_create(name=name, defaults={"task": task, "crontab": crontab})


def backwards(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, *_ in SCHEDULES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_immutability_triggers"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
