from django.db import models


class WorkerHeartbeat(models.Model):
    """A task worker's sign of life, written every few seconds by ``manage.py worker`` (see ops.worker).

    ``busy_since`` is when the task it is running started (empty while idle), so a worker stuck in one
    task is told apart from a worker that is alive and taking tasks.
    """

    worker_id = models.CharField(max_length=64, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    beat_at = models.DateTimeField()
    busy_since = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"worker {self.worker_id} on {self.hostname} (pid {self.pid})"


class ScheduledJob(models.Model):
    """When a periodic job (housekeeping) is next due. The workers all look at it; the one whose
    conditional UPDATE moves ``next_run_at`` forward runs the job, so it runs once per period."""

    name = models.CharField(max_length=64, unique=True)
    next_run_at = models.DateTimeField()

    def __str__(self):
        return f"{self.name} (next at {self.next_run_at:%Y-%m-%d %H:%M:%S})"
