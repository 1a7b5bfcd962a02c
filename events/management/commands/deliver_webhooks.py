from django.core.management.base import BaseCommand

from events.delivery import deliveries_send_due


class Command(BaseCommand):
    help = "Send every webhook delivery that is due now, once, and say how many were attempted."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--max-seconds", type=float, default=None, help="Stop after this long.")

    def handle(self, *args, max_seconds: float | None, **options) -> None:
        attempts = deliveries_send_due(max_seconds=max_seconds)
        self.stdout.write(f"Attempted {attempts} webhook deliveries.")
