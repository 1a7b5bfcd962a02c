"""The operations dashboard, the pool page and the tenant page in a real browser (Playwright
driving Debian's chromium, installed by scripts/ensure-chromium.sh): on the seeded demo
history every chart is drawn from the numbers the database gives and the dashboard's revenue
and margin equal the CSV reports. The screenshots in docs/screenshots/ are taken here.

One test: seeding the three months of history is most of its time, and a live server's
database is emptied after each test."""

import csv
import io
import os
from datetime import UTC, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from playwright.sync_api import Page, sync_playwright

from billing.models import SlaCredit, UsageRecord
from billing.selectors import balance_get
from billing.services import reports
from capacity.models import CapacityPool, Incident, PoolHour
from core.timeutils import utcnow
from dashboard.selectors import report_months
from marketplace.models import Tenant
from tests.db_helpers import restore_default_policies

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DASHBOARD_CHARTS = ["margin", "utilisation", "backup", "tenants", "sla"]

pytestmark = pytest.mark.django_db(transaction=True)


def chart(page: Page, chart_id: str) -> dict:
    """The Chart.js instance drawn on ``#chart-<id>``: its labels, datasets and whether its
    canvas has pixels painted."""
    return page.evaluate(
        """(id) => {
            const canvas = document.getElementById(`chart-${id}`);
            const instance = Chart.getChart(canvas);
            if (!instance || instance !== window.dashboardCharts[id]) return null;
            const context = canvas.getContext("2d");
            const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
            let painted = 0;
            for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) painted++;
            return {
                labels: instance.data.labels,
                datasets: instance.data.datasets.map((d) => ({label: d.label, data: d.data})),
                painted,
                width: canvas.width,
                legendColor: instance.options.plugins.legend.labels.color,
            };
        }""",
        chart_id,
    )


def series(drawn: dict, label: str) -> list:
    return next(d["data"] for d in drawn["datasets"] if d["label"] == label)


def money(value) -> Decimal | None:
    return None if value in (None, "") else Decimal(str(value)).quantize(Decimal("0.01"))


def assert_drawn(drawn: dict | None) -> None:
    assert drawn is not None, "no Chart instance on the canvas"
    assert drawn["width"] > 0
    assert drawn["painted"] > 500, "the canvas is blank"
    assert any(value for dataset in drawn["datasets"] for value in dataset["data"]), drawn


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.wait_for_function(
            "(fg) => Object.values(window.dashboardCharts).every("
            "(c) => c.options.plugins.legend.labels.color === fg)",
            arg=page.evaluate(
                "getComputedStyle(document.documentElement).getPropertyValue('--body-fg').trim()"
            ),
        )
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{scheme}.png"), full_page=True)
    page.emulate_media(color_scheme="light")


@pytest.fixture
def live_server(live_server):
    """pytest-django's live server. A request thread of it can keep an idle database
    connection open after the browser has gone (the threads of keep-alive sockets outlive the
    test), which stops the test database from being dropped at the end of the run: those are
    ended here."""
    yield live_server
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"
        )


def test_the_dashboard_pool_and_tenant_pages_chart_what_the_database_holds(
    live_server, monkeypatch
):
    # given: the demo catalogue, three months of history and the operator login
    restore_default_policies()
    call_command("seed_demo", operator=True, stdout=io.StringIO())
    # The ORM is called between browser steps; Playwright's sync API runs an event loop.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    now = utcnow()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start, last, end = report_months(now)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            # when: the operator logs in and opens the dashboard from the admin's home
            page.goto(f"{live_server.url}/admin/login/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", "operator-demo")
            page.click("input[type=submit]")
            page.click("#dashboard-link a")
            page.wait_for_function("window.dashboardCharts && window.dashboardCharts.sla")

            # then: every chart is drawn, with data
            drawn = {name: chart(page, name) for name in DASHBOARD_CHARTS}
            for name in DASHBOARD_CHARTS:
                assert_drawn(drawn[name])

            # revenue, cost and margin equal the margin CSV of the same months
            margin_csv = page.get_attribute("#margin a:has-text('CSV per provider')", "href")
            assert f"from={start:%Y-%m}&to={last:%Y-%m}" in margin_csv
            answer = page.request.get(f"{live_server.url}{margin_csv}")
            assert answer.status == 200
            rows = list(csv.DictReader(io.StringIO(answer.text())))
            assert rows
            expected = reports.margin_report(start=start, end=end)
            assert answer.text() == expected.to_csv()
            months = drawn["margin"]["labels"]
            margin_per_month = dict.fromkeys(months, Decimal(0))
            for row in rows:
                at = months.index(row["month"])
                revenue = series(drawn["margin"], f"{row['provider']} revenue")[at]
                cost = series(drawn["margin"], f"{row['provider']} cost")[at]
                assert money(revenue) == money(row["revenue"])
                assert money(cost) == money(Decimal(row["sold_cost"]) + Decimal(row["idle_cost"]))
                margin_per_month[row["month"]] += Decimal(row["margin"])
            drawn_margin = series(drawn["margin"], "Margin (all providers)")
            assert [money(v) for v in drawn_margin] == [money(margin_per_month[m]) for m in months]
            assert any(margin_per_month.values())
            table = page.locator("#table-margin tbody tr").all_inner_texts()
            assert len(table) == len(rows)

            # the backup share equals its CSV
            backup_csv = page.get_attribute("#backup a:has-text('CSV')", "href")
            backup_rows = list(
                csv.DictReader(
                    io.StringIO(page.request.get(f"{live_server.url}{backup_csv}").text())
                )
            )
            assert backup_rows
            for row in backup_rows:
                at = drawn["backup"]["labels"].index(row["month"])
                share = series(drawn["backup"], f"Backup share of {row['currency']} revenue (%)")[
                    at
                ]
                assert money(share) == money(row["backup_share_percent"])

            # utilisation per pool, past 30 days: the ledger's booked GPU-hours
            past = today - timedelta(days=30)
            booked = dict(
                PoolHour.objects.filter(hour__gte=past, hour__lt=today)
                .values_list("pool__slug")
                .annotate(total=Sum("booked"))
            )
            labels = drawn["utilisation"]["labels"]
            assert sorted(labels) == sorted(CapacityPool.objects.values_list("slug", flat=True))
            percent = series(drawn["utilisation"], "Booked / capacity, past 30 days (%)")
            for slug, value in zip(labels, percent, strict=True):
                cells = page.locator(
                    f"#table-utilisation tr[data-pool='{slug}'] td"
                ).all_inner_texts()
                assert int(cells[3]) == (booked.get(slug) or 0)
                capacity = int(cells[4])
                expected_percent = (
                    None
                    if not capacity
                    else float(
                        (Decimal(100) * (booked.get(slug) or 0) / capacity).quantize(Decimal("0.1"))
                    )
                )
                assert value == expected_percent
            assert any(percent)

            # the outlook heatmap: booked GPU-hours per pool and day from the ledger
            ahead = (
                PoolHour.objects.filter(hour__gte=today, hour__lt=today + timedelta(days=30))
                .annotate(day=TruncDate("hour", tzinfo=UTC))
                .values_list("pool__slug", "day")
                .annotate(total=Sum("booked"))
            )
            ahead = {(slug, day): total for slug, day, total in ahead}
            assert any(ahead.values())
            for (slug, day), total in ahead.items():
                column = (day - today.date()).days
                cell = page.locator(f"#heatmap tr[data-pool='{slug}'] td").nth(column)
                assert int(cell.get_attribute("data-booked")) == total

            # top tenants: metered GPU-hours of the past 30 days
            usage = (
                UsageRecord.objects.filter(hour__gte=past, hour__lt=today)
                .values_list("tenant__name", "currency")
                .annotate(gpu_hours=Sum("gpu_hours"))
                .order_by("-gpu_hours")
            )
            assert drawn["tenants"]["labels"] == [f"{n} ({c})" for n, c, _ in usage][:10]
            assert (
                series(drawn["tenants"], "GPU-hours, past 30 days")
                == [float(h) for _, _, h in usage][:10]
            )

            # SLA credits per month
            credits = (
                SlaCredit.objects.filter(period_start__gte=start, period_start__lt=end)
                .values_list("currency")
                .annotate(total=Sum("amount"), count=Count("id"))
            )
            assert credits
            for currency, total, _ in credits:
                assert money(sum(series(drawn["sla"], f"SLA credits ({currency})"))) == total

            # the lists: the open outage, an overdue invoice, the failing endpoint
            assert "No open incidents" not in page.inner_text("#incidents")
            assert "No invoice is overdue" not in page.inner_text("#overdue")
            assert "127.0.0.1:9" in page.inner_text("#webhooks")
            assert "No contract ends" not in page.inner_text("#contracts")
            screenshot(page, "dashboard")

            # the pool page: capacity timeline of the pool with the open outage, by week
            outage = Incident.objects.filter(end__isnull=True).select_related("pool").first()
            pool = outage.pool
            page.click(f"#incidents a:has-text('{pool.slug}')")
            page.wait_for_function("window.dashboardCharts && window.dashboardCharts.timeline")
            timeline = chart(page, "timeline")
            assert_drawn(timeline)
            week = today - timedelta(days=today.weekday())
            ledger = dict(
                PoolHour.objects.filter(
                    pool=pool, hour__gte=week, hour__lt=week + timedelta(days=7)
                ).values_list("hour", "booked")
            )
            drawn_booked = series(timeline, "Booked")
            assert len(drawn_booked) == 168
            assert drawn_booked == [ledger.get(week + timedelta(hours=h), 0) for h in range(168)]
            # the GPUs out in incidents (not maintenance) each hour, as the incidents say
            incidents = list(
                Incident.objects.filter(pool=pool).exclude(kind=Incident.Kind.MAINTENANCE)
            )
            assert series(timeline, "Incidents") == [
                sum(
                    incident.gpus
                    for incident in incidents
                    if incident.covers(week + timedelta(hours=h))
                )
                for h in range(168)
            ]
            screenshot(page, "pool")
            page.click("#week-previous")
            page.wait_for_function("window.dashboardCharts && window.dashboardCharts.timeline")
            assert f"Week of {week - timedelta(days=7):%Y-%m-%d}" in page.inner_text("#content")
            assert_drawn(chart(page, "timeline"))

            # the tenant page: usage per day and credit against the limit
            tenant = Tenant.objects.annotate(n=Count("usage")).order_by("-n").first()
            page.goto(f"{live_server.url}/admin/marketplace/tenant/{tenant.pk}/change/")
            page.click("a:has-text('Usage and credit')")
            page.wait_for_function("window.dashboardCharts && window.dashboardCharts.credit")
            usage_chart, credit_chart = chart(page, "usage"), chart(page, "credit")
            assert_drawn(usage_chart)
            assert_drawn(credit_chart)
            per_day = dict(
                UsageRecord.objects.filter(tenant=tenant, hour__gte=today - timedelta(days=90))
                .annotate(day=TruncDate("hour", tzinfo=UTC))
                .values_list("day")
                .annotate(total=Sum("gpu_hours"))
            )
            drawn_usage = dict(
                zip(usage_chart["labels"], series(usage_chart, "GPU-hours per day"), strict=True)
            )
            assert {day: value for day, value in drawn_usage.items() if value} == {
                f"{day:%Y-%m-%d}": float(total) for day, total in per_day.items() if total
            }
            balance = balance_get(tenant=tenant)
            assert money(series(credit_chart, "Credit available")[0]) == balance.credit_available
            assert money(series(credit_chart, "Credit used")[0]) == (
                balance.credit_limit - balance.credit_available
            )
            assert "No invoices" not in page.inner_text("#invoices")
            assert "No reservations" not in page.inner_text("#reservations")
            screenshot(page, "tenant")
        finally:
            browser.close()
