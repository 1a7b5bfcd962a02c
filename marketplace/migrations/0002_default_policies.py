"""Default price book, cancellation policy and the lifecycle schedule; all editable in the admin."""

from decimal import Decimal

from django.db import migrations


def forwards(apps, schema_editor):
    CommitmentDiscount = apps.get_model("marketplace", "CommitmentDiscount")
    CancellationRule = apps.get_model("marketplace", "CancellationRule")
    for min_hours, percent in ((168, "10.00"), (720, "20.00")):
        CommitmentDiscount.objects.get_or_create(
            min_hours=min_hours, defaults={"percent": Decimal(percent)}
        )
    # Free with 24 hours' notice; later than that, half the price of the hours given back.
    for notice, fee in ((24, "0.00"), (0, "50.00")):
        CancellationRule.objects.get_or_create(
            min_notice_hours=notice, defaults={"fee_percent": Decimal(fee)}
        )

    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    PeriodicTask.objects.get_or_create(
        name="Advance reservations (start, complete, expire holds)",
        defaults={"task": "marketplace.tasks.advance_reservations", "interval": every_minute},
    )


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
