from django.db import migrations


class Migration(migrations.Migration):
    """Maintenance windows become incidents (kept rows: maintenance and outage kinds)."""

    dependencies = [("capacity", "0001_initial")]

    operations = [
        migrations.RemoveIndex(model_name="maintenancewindow", name="maint_pool_window_idx"),
        migrations.RemoveConstraint(model_name="maintenancewindow", name="maint_window_ordered"),
        migrations.RemoveConstraint(model_name="maintenancewindow", name="maint_gpus_positive"),
        migrations.RenameModel(old_name="MaintenanceWindow", new_name="Incident"),
    ]
