from django.core.management.base import BaseCommand

from ops.housekeeping import run_housekeeping


class Command(BaseCommand):
    help = (
        "Prune what is past its retention now: update claims and replayed dead letters "
        "(TELEGRAM_UPDATE_RETENTION_DAYS), finished task results (TASK_RESULT_RETENTION_DAYS), the tickets' "
        "history (TICKET_HISTORY_RETENTION_DAYS) and old worker heartbeats. The workers also run it every "
        "HOUSEKEEPING_INTERVAL_SECONDS."
    )

    def handle(self, *args, **options):
        for what, count in run_housekeeping().items():
            self.stdout.write(f"Pruned {count} {what}.")
