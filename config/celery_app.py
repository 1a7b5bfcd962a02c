import gc
import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("gpu_marketplace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _freeze_loaded_objects(**kwargs) -> None:
    # As gunicorn.conf.py does for web workers: what the worker process has loaded is left out
    # of the garbage collector's full collections, which would otherwise walk it again and again.
    gc.freeze()
