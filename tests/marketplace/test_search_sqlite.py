"""The searches on the embedded default (`make run`, SQLite), where the ledger and the quota
peak are read through the ORM rather than PostgreSQL's statements, and a booking's terms as
SQLite returns them (decimals as floats)."""

import json

from tests.sqlite_helpers import run_on_sqlite

SCRIPT = """
    import json
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    from marketplace import pricing, selectors
    from marketplace.services.booking import BookingRequest, reservation_create
    from tests.factories import CapacityPoolFactory, TenantFactory

    CapacityPoolFactory(slug="small", gpus_per_node=8, node_count=4)  # 32 GPUs
    CapacityPoolFactory(
        slug="large", gpus_per_node=8, node_count=8, price_per_gpu_hour=Decimal("4")
    )
    tenant = TenantFactory(credit_limit=Decimal("1e8"))
    monday = datetime(2027, 1, 4, 9, tzinfo=UTC)
    for start, hours, gpus in ((monday, 4, 24), (monday + timedelta(hours=2), 4, 8)):
        request = BookingRequest(
            gpu_model="h100-sxm-80gb", gpu_count=gpus, start=start,
            end=start + timedelta(hours=hours), pool="small",
        )
        booked, _ = reservation_create(
            tenant=tenant, request=request, fingerprint=request.fingerprint()
        )
    criteria = selectors.PoolFilter(gpu_model="h100-sxm-80gb")
    offers = selectors.availability_search(
        tenant=tenant, criteria=criteria, gpu_count=8,
        start=monday + timedelta(hours=1), end=monday + timedelta(hours=5),
    )
    print(json.dumps({
        "offers": {offer.pool.slug: offer.available_gpus for offer in offers},
        "peak": selectors.peak_gpus(tenant=tenant, start=monday, end=monday + timedelta(hours=8)),
        "terms": booked.cancellation_terms,
        "commitment": [str(pricing.commitment_percent(hours)) for hours in (4, 168, 720)],
    }))
"""


def test_on_sqlite_search_reads_the_ledger_and_the_quota_counts_the_peak(tmp_path):
    result = run_on_sqlite(SCRIPT, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    # small: 24 booked 09-13, 8 more 11-15: 0 free 11-13, so no offer; large untouched
    assert outcome["offers"] == {"large": 64}
    assert outcome["peak"] == 32
    # the default policies, with their decimal places, as PostgreSQL gives them
    assert outcome["terms"] == [
        {"min_notice_hours": 24, "fee_percent": "0.00"},
        {"min_notice_hours": 0, "fee_percent": "50.00"},
    ]
    assert outcome["commitment"] == ["0", "10.00", "20.00"]
