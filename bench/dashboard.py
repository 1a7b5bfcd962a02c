"""The operations dashboard's server time at scale: the admin page over 1,000 pools carrying
1,000,000 reservations.

    .venv/bin/python bench/dashboard.py [--pools 1000] [--reservations 1000000] [--calls 30]

Uses the database ``bench_search`` that bench/search.py loads (1,000 pools, 1,000,000
confirmed reservations, their placements and about 1.5 million capacity-ledger rows over the
next two months); it loads it the same way (``search.load``) when it is missing or holds other
figures. An operator (superuser) is added; then the dashboard page is requested N times with
Django's test client (the whole view: queries, template, 25 pools per page), after one
unmeasured request, and the server time is timed. Also timed: the first request after the
cache is emptied (the margin report built, not reused: ``dashboard.selectors
.margin_report_cached``), and the outlook CSV of every pool (1,000 pools x 60 days).

Figures go to var/bench/dashboard.json for bench/summary.py; the ledger check of
bench/benchlib.py runs at the end (exit 1 if it fails)."""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import search  # noqa: E402  (sets DATABASE_URL to bench_search and the settings module)
from benchlib import (  # noqa: E402
    ledger_problems,
    percentile,
    row,
    scaled,
    write_results,
)

GOAL_MS = 300


def timed(client, url: str) -> tuple[float, int]:
    began = time.perf_counter()
    response = client.get(url)
    return (time.perf_counter() - began) * 1000, response.status_code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", type=int, default=scaled(1000))
    parser.add_argument("--reservations", type=int, default=scaled(1_000_000))
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()

    import django

    loaded = None
    if search.database_exists():
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        loaded = search.loaded_data(args.pools, args.reservations)
        if loaded is not None:
            print(f"Database {search.DATABASE}: reusing the data loaded earlier.", flush=True)
    if loaded is None:
        print(f"Database {search.DATABASE}: recreating, migrating, loading...", flush=True)
        from django.db import connections

        connections.close_all()
        search.recreate_database()
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        began = time.perf_counter()
        search.load(args.pools, args.reservations)
        print(f"Loaded in {time.perf_counter() - began:.0f} s (not measured).", flush=True)

    from django.contrib.auth.models import User
    from django.core.cache import cache
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    operator, _ = User.objects.get_or_create(
        username="bench-operator", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(operator)
    url = "/admin/dashboard/dashboard/"

    cache.clear()
    cold_ms, status = timed(client, url)
    if status != 200:
        print(f"The dashboard answered {status}.")
        return 1
    warm = [timed(client, url)[0] for _ in range(args.calls)]
    last_page = f"{url}?page={-(-args.pools // 25)}"
    pages = [timed(client, last_page)[0] for _ in range(max(3, args.calls // 3))]
    csv_ms, _ = timed(client, "/admin/dashboard/dashboard/csv/outlook/")
    p50, p95, worst = percentile(warm, 50), percentile(warm, 95), max(warm + pages + [cold_ms])
    print(f"\n{args.pools:,} pools, {args.reservations:,} reservations:")
    print(
        f"   dashboard           {len(warm)} calls   p50 {p50:6.1f} ms   p95 {p95:6.1f} ms   "
        f"goal < {GOAL_MS} ms"
    )
    print(f"   first call, empty cache  {cold_ms:6.1f} ms")
    print(f"   last page of pools       p50 {percentile(pages, 50):6.1f} ms")
    print(f"   outlook CSV, every pool  {csv_ms:6.1f} ms")
    rows = [
        row(
            f"dashboard server time, {args.pools:,} pools / {args.reservations:,} reservations",
            f"p95 {p95:.0f} ms (p50 {p50:.0f} ms, {len(warm)} calls; first call of the process, "
            f"empty cache {cold_ms:.0f} ms; slowest {worst:.0f} ms)",
            f"p95 < {GOAL_MS} ms",
            p95 < GOAL_MS,
        ),
        row(
            f"dashboard outlook CSV, every pool x 60 days ({args.pools:,} pools)",
            f"{csv_ms:.0f} ms",
            "-",
            None,
        ),
    ]
    print("Checking the ledger...", flush=True)
    problems = ledger_problems()
    print("   guarantee check: " + ("OK" if not problems else "; ".join(problems)))
    write_results("dashboard", rows, guarantee_ok=not problems, problems=problems)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
