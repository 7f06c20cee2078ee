"""The task worker's companion thread: a heartbeat for the health check, and the housekeeping schedule.

django-tasks-db's worker loop has no hook between polls, so a daemon thread beats every
HEARTBEAT_SECONDS: it records that the process lives and, through the task_started / task_finished
signals, since when it has been busy with its current task (a worker stuck in one task shows as busy
for long, not as dead). Every beat also runs housekeeping if it is due (ops.housekeeping).
"""

import logging
import os
import socket
import threading

from django.db import close_old_connections, connections
from django.utils import timezone
from django_tasks_db.compat import task_finished, task_started

from .housekeeping import run_if_due
from .models import WorkerHeartbeat

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10


class Heartbeat:
    def __init__(self, worker_id):
        self.worker_id = worker_id
        self.busy_since = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="worker-heartbeat", daemon=True)

    def start(self):
        task_started.connect(self.task_started, dispatch_uid=f"heartbeat-started-{self.worker_id}")
        task_finished.connect(self.task_finished, dispatch_uid=f"heartbeat-finished-{self.worker_id}")
        self.thread.start()

    def task_started(self, sender, **kwargs):
        self.busy_since = timezone.now()

    def task_finished(self, sender, **kwargs):
        self.busy_since = None

    def run(self):
        while not self.stopped.is_set():
            try:
                self.beat()
                run_if_due()
            except Exception:
                logger.exception("Worker heartbeat or housekeeping failed; trying again in %s s.", HEARTBEAT_SECONDS)
            finally:
                close_old_connections()
            self.stopped.wait(HEARTBEAT_SECONDS)

    def beat(self):
        WorkerHeartbeat.objects.update_or_create(
            worker_id=self.worker_id,
            defaults={
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "beat_at": timezone.now(),
                "busy_since": self.busy_since,
            },
        )

    def stop(self):
        """Stop beating and say goodbye, so the health check does not wait for this worker's silence."""
        self.stopped.set()
        self.thread.join(HEARTBEAT_SECONDS)
        try:
            WorkerHeartbeat.objects.filter(worker_id=self.worker_id).delete()
        finally:
            connections.close_all()
