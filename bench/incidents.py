"""A whole-pool outage displacing reservations, against PostgreSQL, through the real services.

    .venv/bin/python bench/incidents.py [--reservations 1000] [--spare-share 0.6]

BENCH_SCALE multiplies the reservations (default 1,000).

One pool of 8-GPU nodes carries N reservations of 8 GPUs, 12 h each, staggered over a day.
Three other pools of the same model (same region, same country, abroad) have room for about
``--spare-share`` of what the failing pool holds, and are partly booked already. Then the
whole failing pool goes down for the day: ``incident_record`` lowers its capacity and moves
each reservation, one transaction each, in the policy's order.

It prints the seconds to displace them and the share of the lost GPU-hours that found a new
pool, against the most that *could* have (the free capacity of the other pools, hour by hour,
in whole nodes). Its ceiling, measured in the same run on the same data: a bare move
transaction in psycopg per reservation (lock tenant, reservation and the ledger rows of both
pools, move the GPUs, cut and insert placements, log it), without the policy or any checks.
It then checks the guarantee: no hour in excess, every ledger row equal to its placements.
Exit 1 if the check fails. Figures go to var/bench/incidents.json for bench/summary.py.

Uses the bench database (bench_booking, or BENCH_DATABASE_URL) like bench/booking.py."""

import argparse
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import row, scaled, write_results
from booking import GPU_MODEL, database_create_if_missing, django_setup

SPAN_HOURS = 24
LENGTH_HOURS = 12


def seed(reservations: int, spare_share: float):
    """The failing pool full of staggered 8-GPU reservations, and three spare pools."""
    from django.db import connection

    from capacity.models import CapacityPool, GpuModel, Provider, Region
    from core.timeutils import HOUR, floor_hour, utcnow
    from marketplace.models import PoolPrice, Tenant
    from marketplace.services.booking import BookingRequest, reservation_create

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE marketplace_tenant, capacity_capacitypool, capacity_region, "
            "capacity_provider CASCADE"
        )
    gpu, _ = GpuModel.objects.get_or_create(
        slug=GPU_MODEL, defaults={"vendor": "nvidia", "name": "H100 SXM 80GB", "memory_gb": 80}
    )
    provider = Provider.objects.create(name="Bench", slug="bench", kind="neocloud")
    home = Region.objects.create(provider=provider, code="home-1", name="Home", country="US")
    near = Region.objects.create(provider=provider, code="near-1", name="Near", country="US")
    far = Region.objects.create(provider=provider, code="far-1", name="Far", country="DE")
    now = utcnow()
    first_hour = floor_hour(now) + timedelta(days=1)
    # Reservation i covers 12 h from hour i % 12: every one of them overlaps hour 11.
    peak_nodes = reservations
    spare_nodes = max(1, int(peak_nodes * spare_share / 3))

    def pool(slug: str, region, nodes: int, price: str) -> CapacityPool:
        created = CapacityPool.objects.create(
            slug=slug,
            region=region,
            gpu_model=gpu,
            gpus_per_node=8,
            node_count=nodes,
            available_from=now - timedelta(days=1),
            available_until=now + timedelta(days=30),
            cost_per_gpu_hour=Decimal("2.0000"),
        )
        PoolPrice.objects.create(pool=created, currency="USD", price_per_gpu_hour=Decimal(price))
        return created

    failing = pool("failing", home, peak_nodes, "3.0000")
    spares = [
        pool("same-region", home, spare_nodes, "3.5000"),
        pool("same-country", near, spare_nodes, "3.5000"),
        pool("abroad", far, spare_nodes, "3.5000"),
    ]
    tenant = Tenant.objects.create(
        name="Bench tenant", slug="bench-tenant", credit_limit=Decimal("1e10"), max_gpus=10**7
    )
    for i in range(reservations):
        start = first_hour + (i % LENGTH_HOURS) * HOUR
        # Unpinned (the cheapest pool takes it): an incident may move it anywhere.
        request = BookingRequest(
            gpu_model=GPU_MODEL,
            gpu_count=8,
            start=start,
            end=start + LENGTH_HOURS * HOUR,
        )
        reservation_create(tenant=tenant, request=request, fingerprint=request.fingerprint())
    # The spare pools are a third booked already in the busiest hours.
    other = Tenant.objects.create(
        name="Other tenant", slug="other-tenant", credit_limit=Decimal("1e10"), max_gpus=10**7
    )
    for spare in spares:
        for _ in range(spare_nodes // 3):
            start = first_hour + 6 * HOUR
            request = BookingRequest(
                gpu_model=GPU_MODEL,
                gpu_count=8,
                start=start,
                end=start + 8 * HOUR,
                pool=spare.slug,
            )
            reservation_create(tenant=other, request=request, fingerprint=request.fingerprint())
    return failing, spares, first_hour


def replaceable_bound(failing, spares, first_hour) -> tuple[int, int]:
    """(GPU-hours the outage takes, the most of them the spare pools could take, in nodes)."""
    from capacity.models import PoolHour
    from capacity.selectors import free_by_hour

    taken = dict(PoolHour.objects.filter(pool=failing, booked__gt=0).values_list("hour", "booked"))
    end = first_hour + timedelta(hours=SPAN_HOURS + LENGTH_HOURS)
    free = [free_by_hour(spare, first_hour, end) for spare in spares]
    bound = 0
    for i in range(SPAN_HOURS + LENGTH_HOURS):
        hour = first_hour + timedelta(hours=i)
        room = sum(values[i] // 8 * 8 for values in free)
        bound += min(room, taken.get(hour, 0))
    return sum(taken.values()), bound


def bare_moves(failing, spares, first_hour) -> tuple[float, int]:
    """The ceiling: move every reservation off the failing pool with a bare transaction each,
    to the first spare pool with room for its whole window (kept in memory), else drop it."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    conn = psycopg.connect(
        host=db["HOST"],
        port=db["PORT"] or 5432,
        user=db["USER"],
        dbname=db["NAME"],
        password=db["PASSWORD"] or None,
    )
    rows = conn.execute(
        'SELECT r.id, r.tenant_id, p.id, p.start, p."end", p.gpus '
        "FROM marketplace_reservation r JOIN marketplace_placement p ON p.reservation_id = r.id "
        "WHERE p.pool_id = %s ORDER BY r.confirmed_at DESC",
        [failing.pk],
    ).fetchall()
    conn.commit()
    free = {}
    for spare in spares:
        for hour, capacity, booked in conn.execute(
            "SELECT hour, capacity, booked FROM capacity_poolhour WHERE pool_id = %s", [spare.pk]
        ):
            free[spare.pk, hour] = capacity - booked
    conn.commit()
    total = spare.sellable_gpus
    began = time.perf_counter()
    moved = 0
    for reservation_id, tenant_id, placement_id, start, end, gpus in rows:
        hours = [
            start + timedelta(hours=i) for i in range(int((end - start).total_seconds() // 3600))
        ]
        target = next(
            (
                spare.pk
                for spare in spares
                if all(free.get((spare.pk, hour), total) >= gpus for hour in hours)
            ),
            None,
        )
        with conn.transaction():
            conn.execute("SELECT 1 FROM marketplace_tenant WHERE id = %s FOR UPDATE", [tenant_id])
            conn.execute(
                "SELECT 1 FROM marketplace_reservation WHERE id = %s FOR UPDATE", [reservation_id]
            )
            pools = sorted({failing.pk} | ({target} if target else set()))
            conn.execute(
                "SELECT 1 FROM capacity_poolhour WHERE pool_id = ANY(%s) AND hour >= %s "
                "AND hour < %s ORDER BY pool_id, hour FOR UPDATE",
                [pools, start, end],
            )
            conn.execute(
                "UPDATE capacity_poolhour SET booked = booked - %s, "
                "excess = GREATEST(0, LEAST(excess, booked - %s - capacity)) "
                "WHERE pool_id = %s AND hour >= %s AND hour < %s",
                [gpus, gpus, failing.pk, start, end],
            )
            conn.execute("DELETE FROM marketplace_placement WHERE id = %s", [placement_id])
            if target:
                conn.execute(
                    "UPDATE capacity_poolhour SET booked = booked + %s "
                    "WHERE pool_id = %s AND hour >= %s AND hour < %s",
                    [gpus, target, start, end],
                )
                conn.execute(
                    "INSERT INTO marketplace_placement "
                    '(reservation_id, pool_id, start, "end", gpus, created_at) '
                    "VALUES (%s, %s, %s, %s, %s, now())",
                    [reservation_id, target, start, end, gpus],
                )
                for hour in hours:
                    free[target, hour] = free.get((target, hour), total) - gpus
                moved += gpus * len(hours)
    elapsed = time.perf_counter() - began
    conn.close()
    return elapsed, moved


def violations() -> dict[str, int]:
    from django.db import connection

    queries = {
        "hours still in excess": "SELECT count(*) FROM capacity_poolhour WHERE excess > 0",
        "hours booked beyond capacity": """
            SELECT count(*) FROM capacity_poolhour WHERE booked > capacity + excess""",
        "hours whose booked differs from the placements": """
            SELECT count(*) FROM capacity_poolhour h
            WHERE h.booked <> COALESCE((
                SELECT sum(p.gpus) FROM marketplace_placement p
                WHERE p.pool_id = h.pool_id AND p.start <= h.hour AND h.hour < p."end"
            ), 0)""",
    }
    with connection.cursor() as cursor:
        counts = {}
        for label, sql in queries.items():
            cursor.execute(sql)
            counts[label] = cursor.fetchone()[0]
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reservations", type=int, default=scaled(1000), help="default 1,000 x BENCH_SCALE"
    )
    parser.add_argument(
        "--spare-share",
        type=float,
        default=0.6,
        help="spare pools' size against the failing pool's peak (default 0.6)",
    )
    args = parser.parse_args()
    database_create_if_missing()
    django_setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from capacity.models import Incident
    from core.timeutils import utcnow
    from marketplace.services.displacement import incident_record

    print(f"Seeding {args.reservations} reservations on one pool (and the spare pools)...")
    failing, spares, first_hour = seed(args.reservations, args.spare_share)
    bare_seconds, bare_moved = bare_moves(failing, spares, first_hour)
    print("Seeding again for the service run...")
    failing, spares, first_hour = seed(args.reservations, args.spare_share)
    lost, bound = replaceable_bound(failing, spares, first_hour)
    began = time.perf_counter()
    incident = incident_record(
        pool=failing,
        kind=Incident.Kind.OUTAGE,
        gpus=failing.total_gpus,
        start=first_hour,
        end=first_hour + timedelta(hours=SPAN_HOURS + LENGTH_HOURS),
        reason="bench",
        now=utcnow(),
    )
    seconds = time.perf_counter() - began
    from marketplace.models import Displacement

    displaced = Displacement.objects.filter(incident=incident)
    moved = sum(d.gpu_hours_moved for d in displaced)
    lost_hours = sum(d.gpu_hours_lost for d in displaced)
    reservations = displaced.values("reservation_id").distinct().count()
    problems = violations()

    print(f"\n== whole-pool outage: {reservations} reservations displaced")
    print(
        f"   service: {seconds:6.2f} s ({reservations / seconds:6.0f} reservations/s); "
        f"bare move transactions: {bare_seconds:6.2f} s "
        f"({args.reservations / bare_seconds:6.0f}/s); service at "
        f"{bare_seconds / seconds:.0%} of the bare speed"
    )
    print(
        f"   GPU-hours lost to the outage {lost}; could be re-placed at most {bound} "
        f"(free spare capacity, whole nodes); re-placed {moved} = {moved / bound:.0%} of that "
        f"(bare first-fit: {bare_moved / bound:.0%}); interrupted {lost_hours}"
    )
    print("   guarantee check: " + ("OK" if not any(problems.values()) else str(problems)))
    broken = [f"{count} {label}" for label, count in problems.items() if count]
    if moved + lost_hours != lost:
        broken.append(f"moved {moved} + interrupted {lost_hours} GPU-hours != lost {lost}")
    write_results(
        "incidents",
        [
            row(
                f"outage displacement service / bare ({reservations} reservations)",
                f"{bare_seconds / seconds:.0%} ({seconds:.2f} s vs {bare_seconds:.2f} s)",
                "-",
                None,
            ),
            row(
                "outage GPU-hours re-placed / could be",
                f"{moved / bound:.0%} (bare first-fit {bare_moved / bound:.0%})",
                "-",
                None,
            ),
        ],
        guarantee_ok=not broken,
        problems=broken,
    )
    return 0 if not broken else 1


if __name__ == "__main__":
    sys.exit(main())
