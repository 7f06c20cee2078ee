import logging
import os
import time

from django.db import OperationalError
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV
from django_tasks_db.management.commands import db_worker

from ops.worker import Heartbeat

logger = logging.getLogger(__name__)

# Seconds between attempts to start polling again while the database is unavailable.
DATABASE_RETRY_SECONDS = 1


class Command(db_worker.Command):
    help = (
        "Run the task worker (django-tasks-db's db_worker) with a heartbeat for the health check and the "
        "housekeeping schedule. SIGTERM: finish the current task, then exit; a second SIGTERM exits at once, "
        "leaving the task's reply to its lease (the outbox sweep re-drives it). While the database is "
        "unavailable it waits for it rather than exit."
    )

    def handle(self, *args, worker_id, **options):
        if options["reload"] and not options["batch"] and os.environ.get(DJANGO_AUTORELOAD_ENV) != "true":
            # The autoreloader's parent process (DEBUG): it only restarts the child, which beats.
            return super().handle(*args, worker_id=worker_id, **options)
        heartbeat = Heartbeat(worker_id)
        heartbeat.start()
        try:
            while True:
                try:
                    return super().handle(*args, worker_id=worker_id, **options)
                except OperationalError as error:
                    # db_worker's loop ends at the first poll that finds the database gone (a restart, a
                    # failover); a worker that exits then would leave every reply undelivered.
                    if options["batch"]:
                        raise
                    logger.warning("Database unavailable (%s); polling again in %s s.", error, DATABASE_RETRY_SECONDS)
                    time.sleep(DATABASE_RETRY_SECONDS)
        finally:
            heartbeat.stop()
