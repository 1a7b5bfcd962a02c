"""The embedded default (`make run`, SQLite) under 32 booking clients at once: every request
ends in a booking or a clean refusal, never a 5xx from "database is locked", and the pool
fills exactly."""

from tests.sqlite_helpers import run_on_sqlite

SCRIPT = """
    import json, threading
    from collections import Counter
    from datetime import timedelta
    from decimal import Decimal
    import django
    django.setup()
    from django.core.management import call_command
    from django.test import Client
    call_command("migrate", verbosity=0)
    from capacity.models import PoolHour
    from marketplace.services.tenants import api_key_create
    from tests.factories import CapacityPoolFactory, TenantFactory

    CapacityPoolFactory(gpus_per_node=8, node_count=16)  # 128 GPUs: 16 bookings of 8
    keys = [api_key_create(tenant=TenantFactory(credit_limit=Decimal("1e8")))[1] for _ in range(32)]
    body = json.dumps({"gpu_model": "h100-sxm-80gb", "gpu_count": 8,
                       "start": "2027-01-04T09:00:00Z", "end": "2027-01-04T13:00:00Z"})
    statuses, barrier = Counter(), threading.Barrier(32)

    def client(i):
        api = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {keys[i]}")
        barrier.wait()
        for n in range(3):
            response = api.post("/api/v1/reservations/", body, content_type="application/json",
                                HTTP_IDEMPOTENCY_KEY=f"k-{i}-{n}")
            code = response.json().get("code", "") if response.status_code >= 400 else ""
            statuses[f"{response.status_code} {code}".strip()] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads: t.start()
    for t in threads: t.join(timeout=100)
    print(json.dumps({"statuses": statuses,
                      "booked": sorted(set(PoolHour.objects.values_list("booked", flat=True)))}))
"""


def test_32_clients_booking_at_once_on_sqlite_get_bookings_or_clean_refusals(tmp_path):
    result = run_on_sqlite(SCRIPT, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    # 96 requests: exactly 16 bookings fill the 128 GPUs, every other one a clean 409
    assert outcome["statuses"] == {"201": 16, "409 insufficient_capacity": 80}
    assert outcome["booked"] == [128]
