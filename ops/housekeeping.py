"""Housekeeping: what the database would otherwise keep forever, pruned on a schedule the workers run.

``run_housekeeping`` prunes, each after its own retention setting: the claims of processed updates
(bots.TelegramUpdate), replayed dead letters, finished task results (django-tasks), the tickets' event
history, and the heartbeats of workers long gone. ``run_if_due`` is called by every worker every few
seconds; a conditional UPDATE of ``ScheduledJob`` lets exactly one of them run it per period.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from bots.dead_letters import prune_replayed
from bots.handlers import prune_update_claims
from tickets import services

from .models import ScheduledJob, WorkerHeartbeat

logger = logging.getLogger(__name__)

JOB = "housekeeping"
HEARTBEAT_RETENTION = timedelta(days=1)


def prune_task_results(older_than):
    """Delete task results that finished (successfully or not) longer ago than ``older_than``."""
    deleted, _ = DBTaskResult.objects.finished().filter(finished_at__lt=timezone.now() - older_than).delete()
    return deleted


def run_housekeeping():
    """Prune everything past its retention now; returns {what: rows deleted}."""
    claims = timedelta(days=settings.TELEGRAM_UPDATE_RETENTION_DAYS)
    pruned = {
        "update claims": prune_update_claims(claims),
        "replayed dead letters": prune_replayed(claims),
        "task results": prune_task_results(timedelta(days=settings.TASK_RESULT_RETENTION_DAYS)),
        "ticket events": services.prune_history(timedelta(days=settings.TICKET_HISTORY_RETENTION_DAYS)),
        "worker heartbeats": WorkerHeartbeat.objects.filter(beat_at__lt=timezone.now() - HEARTBEAT_RETENTION).delete()[
            0
        ],
    }
    logger.info("Housekeeping pruned %s.", ", ".join(f"{count} {what}" for what, count in pruned.items()))
    return pruned


def run_if_due():
    """Run housekeeping if its period is over and no other worker took this turn; True if it ran."""
    now = timezone.now()
    next_run_at = now + timedelta(seconds=settings.HOUSEKEEPING_INTERVAL_SECONDS)
    ScheduledJob.objects.get_or_create(name=JOB, defaults={"next_run_at": now})
    if not ScheduledJob.objects.filter(name=JOB, next_run_at__lte=now).update(next_run_at=next_run_at):
        return False
    run_housekeeping()
    return True
