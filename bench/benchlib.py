"""What the benches share: the size multiplier, percentiles, the guarantee checks on the ledger
and the books, and the figures each bench leaves in var/bench/<name>.json for bench/summary.py.

BENCH_SCALE (default 1) multiplies each bench's size (pools, reservations, tenants, events) or,
for the throughput benches, its measuring time: ``BENCH_SCALE=10 make bench`` runs them all at
ten times the default. Each bench's flags override what the scale sets."""

import json
import os
import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR", ROOT / "var" / "bench"))
SCALE = float(os.environ.get("BENCH_SCALE", "1") or 1)
if SCALE <= 0:
    raise SystemExit("BENCH_SCALE must be a positive number.")


def scaled(value: float) -> int:
    """``value`` times BENCH_SCALE, at least 1."""
    return max(1, round(value * SCALE))


def percentile(values: list[float], percent: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def verdict(ok: bool) -> str:
    return "ok" if ok else "short"


# Set-based, so that they stay cheap at a million reservations: every placement is expanded to
# its hours and summed per (pool, hour); a full join with the ledger catches both a row whose
# `booked` differs and a placement hour without a ledger row.
LEDGER_CHECKS = {
    "hours booked beyond capacity or below zero": """
        SELECT count(*) FROM capacity_poolhour
        WHERE booked > capacity + excess OR booked < 0""",
    "hours whose booked differs from the placements (or placements without a ledger row)": """
        WITH held AS (
            SELECT pool_id, hour, sum(gpus) AS gpus
            FROM marketplace_placement,
                 generate_series(start, "end" - interval '1 hour', interval '1 hour') AS hour
            GROUP BY pool_id, hour
        )
        SELECT count(*) FROM capacity_poolhour h FULL JOIN held USING (pool_id, hour)
        WHERE COALESCE(h.booked, 0) <> COALESCE(held.gpus, 0)""",
    # The books of a booking: what each live reservation bought is what its placements hold.
    "reservations whose placements do not hold what was bought": """
        SELECT count(*) FROM marketplace_reservation r
        LEFT JOIN (
            SELECT reservation_id,
                   sum(gpus * EXTRACT(EPOCH FROM "end" - start) / 3600) AS gpu_hours
            FROM marketplace_placement GROUP BY reservation_id
        ) p ON p.reservation_id = r.id
        WHERE r.status IN ('held', 'confirmed', 'active')
          AND COALESCE(p.gpu_hours, 0)
              <> r.gpu_count * EXTRACT(EPOCH FROM r.capacity_until - r.start) / 3600""",
}


def ledger_violations(execute) -> dict[str, int]:
    """Run the checks with ``execute(sql) -> first column of the first row`` (a Django or a
    psycopg cursor behind it); returns the count of offending rows per check."""
    return {label: int(execute(sql)) for label, sql in LEDGER_CHECKS.items()}


def django_ledger_violations() -> dict[str, int]:
    from django.db import connection

    def execute(sql: str) -> Any:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0]

    return ledger_violations(execute)


def ledger_problems() -> list[str]:
    """``django_ledger_violations`` as printable lines, one per check that failed (none when
    the ledger holds)."""
    return [f"{count} {label}" for label, count in django_ledger_violations().items() if count]


def row(what: str, measured: str, goal: str, ok: bool | None) -> dict[str, str]:
    """One line of the summary table; ``ok`` None: a figure without a goal (informative)."""
    return {
        "what": what,
        "measured": measured,
        "goal": goal,
        "status": "-" if ok is None else verdict(ok),
    }


def write_results(
    name: str, rows: list[dict[str, str]], guarantee_ok: bool, problems: list[str] | None = None
) -> Path:
    """Leave the bench's figures for bench/summary.py in var/bench/<name>.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "bench": name,
        "scale": SCALE,
        "rows": rows,
        "guarantee_ok": guarantee_ok,
        "problems": problems or [],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
