"""The outbox's bookkeeping: enqueuing a reply's delivery, leasing it for an attempt, retrying, re-driving.

A queued reply's ``delivery_due_at`` says when its next attempt is due or, while an attempt runs, until
when that attempt holds it (its lease). Every change here is a conditional UPDATE, so of two tasks for one
reply only one sends it, and an outcome is recorded only by the attempt still holding the lease
(tickets.services.mark_delivered / mark_delivery_failed). None of this is visible to agents until the
reply is sent or fails, which tickets.services records as the ticket's events.
"""

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from tickets.models import Message
from tickets.queries import stranded_replies

from .tasks import deliver_reply

logger = logging.getLogger(__name__)


def enqueue_delivery(message, run_after=None):
    """Enqueue the task that delivers ``message``, in the caller's transaction."""
    task = deliver_reply.using(run_after=run_after) if run_after else deliver_reply
    task.enqueue(message.pk)


def enqueue_queued_reply(sender, message, **kwargs):
    """Receiver of tickets.hooks.reply_queued: the reply's task commits with the reply."""
    enqueue_delivery(message)


def _due(queryset, now):
    return queryset.filter(delivery_status=Message.DeliveryStatus.QUEUED).filter(
        Q(delivery_due_at__isnull=True) | Q(delivery_due_at__lte=now)
    )


def claim_delivery(message_id, lease: timedelta):
    """Start a delivery attempt if the reply is still queued and due; returns the message or None.

    One conditional UPDATE, so of two tasks for the same reply only one sends it. The attempt holds the
    reply until ``delivery_due_at`` (its lease), and the outbox sweep re-drives the reply if the worker
    died holding it.
    """
    now = timezone.now()
    lease_until = now + lease
    claimed = _due(Message.objects.filter(pk=message_id), now).update(
        delivery_due_at=lease_until, delivery_attempts=F("delivery_attempts") + 1
    )
    if not claimed:
        return None
    return Message.objects.select_related("ticket__customer").get(pk=message_id, delivery_due_at=lease_until)


def postpone_delivery(message, due_at: datetime):
    """Move a due reply's next attempt to ``due_at`` (Telegram's flood limits) without counting an attempt.

    Conditional like a claim: a reply that another attempt holds, or that is already done, is left alone.
    """
    with transaction.atomic():
        moved = _due(Message.objects.filter(pk=message.pk), timezone.now()).update(delivery_due_at=due_at)
        if moved:
            enqueue_delivery(message, run_after=due_at)
    return bool(moved)


def schedule_delivery_retry(message, due_at: datetime, error):
    """Keep the reply queued, note ``error``, and enqueue its next attempt for ``due_at`` — if the attempt
    still holds its lease (``message.delivery_due_at``)."""
    with transaction.atomic():
        held = Message.objects.filter(
            pk=message.pk, delivery_status=Message.DeliveryStatus.QUEUED, delivery_due_at=message.delivery_due_at
        ).update(delivery_due_at=due_at, delivery_error=error)
        if not held:
            logger.warning(
                "Reply %s: attempt %s lost its lease; no retry scheduled.", message.pk, message.delivery_attempts
            )
            return False
        message.delivery_due_at, message.delivery_error = due_at, error
        enqueue_delivery(message, run_after=due_at)
    return True


def redrive_stranded_replies(stranded_after: timedelta):
    """Re-enqueue replies still queued long after they were due: their task was lost or its worker died.

    Returns how many were re-driven. A reply whose worker is merely slow is protected by its lease,
    so a re-drive at worst costs a no-op task.
    """
    count = 0
    with transaction.atomic():
        for message in stranded_replies(stranded_after).select_for_update(skip_locked=True):
            # Conditional again: without row locks (SQLite) a claim could have come in since the SELECT.
            if not stranded_replies(stranded_after).filter(pk=message.pk).update(delivery_due_at=timezone.now()):
                continue
            enqueue_delivery(message)
            count += 1
    if count:
        logger.warning("Re-drove %d stranded replies (queued for more than %s).", count, stranded_after)
    return count
