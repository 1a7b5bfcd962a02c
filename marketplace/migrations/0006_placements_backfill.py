from django.db import migrations
from django.db.models import F

DEFAULT_RULES = [(1, "recallable_first"), (2, "latest_confirmed_first")]


def forwards(apps, schema_editor):
    """Every reservation that holds (or held) capacity gets its placement on its own pool, and
    the default displacement policy: recallable (backup) reservations first, then the most
    recently confirmed."""
    Reservation = apps.get_model("marketplace", "Reservation")
    Placement = apps.get_model("marketplace", "Placement")
    DisplacementRule = apps.get_model("marketplace", "DisplacementRule")
    rows = Reservation.objects.filter(capacity_until__gt=F("start")).values_list(
        "pk", "pool_id", "start", "capacity_until", "gpu_count"
    )
    batch = []
    for pk, pool_id, start, until, gpus in rows.iterator(chunk_size=2000):
        batch.append(
            Placement(reservation_id=pk, pool_id=pool_id, start=start, end=until, gpus=gpus)
        )
        if len(batch) >= 2000:
            Placement.objects.bulk_create(batch)
            batch = []
    Placement.objects.bulk_create(batch)
    for position, order in DEFAULT_RULES:
        DisplacementRule.objects.get_or_create(order=order, defaults={"position": position})


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0005_placements_displacements")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
