import logging
import time
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import OperationalError, close_old_connections

from bots.outbox import redrive_stranded_replies

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Re-enqueue replies stuck in the outbox: the first queued reply of a chat, due long ago, with no "
        "delivery task left to run it (the task was lost or its worker died). Replies merely waiting for a "
        "worker or for an earlier reply to the same chat are left alone. Runs once, or forever with --every."
    )

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, help="Repeat every this many seconds instead of running once.")
        parser.add_argument(
            "--stranded-after",
            type=float,
            default=settings.OUTBOX_STRANDED_AFTER_SECONDS,
            help="Seconds past due after which a chat's first queued reply without a live task counts as "
            "stranded (default: %(default)s).",
        )

    def handle(self, *args, every=None, stranded_after, **options):
        while True:
            try:
                count = redrive_stranded_replies(timedelta(seconds=stranded_after))
            except OperationalError as error:
                if every is None:
                    raise
                # A database restart must not end the sweep: it is what re-drives the replies cut off by it.
                logger.warning("Database unavailable (%s); sweeping again in %s s.", error, every)
            else:
                if count or every is None:
                    self.stdout.write(f"Re-enqueued {count} stranded repl{'y' if count == 1 else 'ies'}.")
                if every is None:
                    return
            close_old_connections()
            time.sleep(every)
