"""`make run` uses SQLite: events are recorded, numbered and delivered there too."""

from tests.sqlite_helpers import run_on_sqlite


def test_events_are_recorded_and_delivered_on_the_sqlite_development_setup(tmp_path):
    script = """
        import django
        django.setup()
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from django.core.management import call_command
        from django.db import transaction
        from events.delivery import deliveries_send_due
        from events.models import Delivery, Event
        from events.services import endpoint_create, event_record

        received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["content-length"]))
                received.append(self.headers["webhook-id"])
                self.send_response(500 if len(received) == 1 else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        call_command("migrate", verbosity=0)
        endpoint_create(tenant_id=7, url=f"http://127.0.0.1:{server.server_port}/hook")
        with transaction.atomic():
            first = event_record(tenant_id=7, type="quote.created", data={"n": 1})
            second = event_record(tenant_id=7, type="quote.expired", data={"n": 2})
        print(deliveries_send_due())
        Delivery.objects.update(next_attempt_at=Delivery.objects.get(event=first).created_at)
        print(deliveries_send_due())
        print(list(Event.objects.order_by("sequence").values_list("type", "sequence")))
        print(sorted(Delivery.objects.values_list("status", "attempts")))
        print(len(received), len(set(received)) == 2)
        server.shutdown()
        """
    result = run_on_sqlite(script, tmp_path, WEBHOOK_CONCURRENCY="1")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "2",
        "1",
        "[('quote.created', 1), ('quote.expired', 2)]",
        "[('succeeded', 1), ('succeeded', 2)]",
        "3 True",
    ]
