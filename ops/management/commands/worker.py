import os

from django.utils.autoreload import DJANGO_AUTORELOAD_ENV
from django_tasks_db.management.commands import db_worker

from ops.worker import Heartbeat


class Command(db_worker.Command):
    help = (
        "Run the task worker (django-tasks-db's db_worker) with a heartbeat for the health check and the "
        "housekeeping schedule. SIGTERM: finish the current task, then exit; a second SIGTERM exits at once, "
        "leaving the task's reply to its lease (the outbox sweep re-drives it)."
    )

    def handle(self, *args, worker_id, **options):
        if options["reload"] and not options["batch"] and os.environ.get(DJANGO_AUTORELOAD_ENV) != "true":
            # The autoreloader's parent process (DEBUG): it only restarts the child, which beats.
            return super().handle(*args, worker_id=worker_id, **options)
        heartbeat = Heartbeat(worker_id)
        heartbeat.start()
        try:
            super().handle(*args, worker_id=worker_id, **options)
        finally:
            heartbeat.stop()
