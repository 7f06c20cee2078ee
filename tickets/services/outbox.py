"""A reply's delivery as agents see it: its outcome, a retry under way, and an agent's re-send.

The outbound channel (bots.outbox) leases a queued reply while it sends it, by moving ``delivery_due_at`` to
the end of the lease. An outcome is recorded only while that lease still holds (``lease_until`` unchanged and
the reply still queued), so of two attempts at one reply only the one holding it decides how it ended.
"""

from django.db import transaction
from django.utils import timezone

from ..hooks import reply_queued
from ..models import Customer, Message, TicketEvent
from . import rows
from .base import TicketRuleError, lock_customer, lock_ticket
from .history import SYSTEM, Actor, record_events
from .replies import check_can_reach, take_outbox_seq


def delivery_changed(message):
    return TicketEvent.Kind.DELIVERY, {
        "message_id": message.pk,
        "status": message.delivery_status,
        "error": message.delivery_error or None,
        "telegram_message_id": message.telegram_message_id,
    }


def mark_delivered(message, telegram_message_id, *, lease_until):
    """The reply reached Telegram as ``telegram_message_id``. False if the attempt had lost its lease.

    Notes the time on the customer either way (they did receive a message now): their chat's next reply is
    spaced from it (bots.outbox). That UPDATE is also the customer's row lock, taken first as always, in the
    same round trip as the reply's (in SQL, as every delivery's statements are: bots.outbox).
    """
    noted = (
        f"UPDATE {Customer._meta.db_table} SET last_reply_sent_at = %s WHERE id = %s",
        [rows.moment(timezone.now()), message.ticket.customer_id],
    )
    with transaction.atomic(savepoint=False):
        return _record_outcome(
            message,
            lease_until,
            first=[noted],
            delivery_status=Message.DeliveryStatus.SENT,
            telegram_message_id=telegram_message_id,
            delivery_error="",
        )


def mark_delivery_failed(message, error, *, lease_until):
    """The reply will not reach Telegram, for the reason ``error``. False if the attempt had lost its lease."""
    with transaction.atomic(savepoint=False):
        lock_customer(message.ticket.customer_id)
        return _record_outcome(
            message, lease_until, delivery_status=Message.DeliveryStatus.FAILED, delivery_error=error
        )


def _record_outcome(message, lease_until, first=(), **fields):
    # The customer's lock, held already, orders this with the reply's other changes; the ticket's is taken by
    # record_events (after the reply's, see tickets.services.base), so its events are numbered in commit order.
    held = _update_if_held(message, lease_until, first, delivery_due_at=None, delivery_failing_since=None, **fields)
    if not held:
        return False
    record_events(message.ticket, SYSTEM, delivery_changed(message))
    return True


def _update_if_held(message, lease_until, first=(), **fields):
    """Change the reply (and ``message``) only if the attempt still holds it: still queued, lease unchanged.
    ``first``: statements to run before, in the same round trip (rows.in_turn)."""
    assignments, values = rows.assignments(Message, fields)
    held, lease = rows.equals("delivery_due_at", rows.moment(lease_until))
    *_, changed = rows.in_turn(
        *first,
        (
            f"UPDATE {Message._meta.db_table} SET {', '.join(assignments)} "
            f"WHERE id = %s AND delivery_status = %s AND {held}",
            [*values, message.pk, Message.DeliveryStatus.QUEUED.value, *lease],
        ),
    )
    if not changed:
        return False
    for name, value in fields.items():
        setattr(message, name, value)
    return True


def mark_delivery_retrying(message, error, *, lease_until, retry_at, transient, telegram_wait=False):
    """The attempt failed for a passing reason ``error``: the reply stays queued, due again at ``retry_at``.

    A ``transient`` error (not Telegram's 429) starts the retry window (``delivery_failing_since``) unless
    it runs already; the first one is recorded as a delivery event (queued, with the reason), so the agent
    sees the reply held up, and the customer's later replies with it. A ``telegram_wait`` (Telegram's 429)
    moves a running window on by the wait, so the time Telegram has the reply wait never counts towards it.
    False if the attempt lost its lease.
    """
    fields = {"delivery_due_at": retry_at, "delivery_error": error}
    first_failure = transient and message.delivery_failing_since is None
    if first_failure:
        fields["delivery_failing_since"] = timezone.now()
    elif telegram_wait and message.delivery_failing_since is not None:
        fields["delivery_failing_since"] = message.delivery_failing_since + (retry_at - timezone.now())
    with transaction.atomic(savepoint=False):
        # No customer's lock here: the ticket's, first, orders this with an erasure (ticket, then its replies).
        ticket = lock_ticket(message.ticket_id) if first_failure else None
        if not _update_if_held(message, lease_until, **fields):
            return False
        if first_failure:
            record_events(ticket, SYSTEM, delivery_changed(message))
    return True


def resend_reply(message, *, acting_user):
    """Queue a failed reply again, at the back of its customer's queue, through the same outbox.

    Once: the reply goes from failed to queued with one conditional UPDATE, so of two re-sends at the same
    time (a double click) one queues it and the other is refused. Returns the reply as it is now.
    """
    with transaction.atomic():
        outbox_seq = take_outbox_seq(message.ticket.customer_id)
        ticket = lock_ticket(message.ticket_id)
        check_can_reach(ticket)
        requeued = Message.objects.filter(
            pk=message.pk, direction=Message.Direction.OUT, delivery_status=Message.DeliveryStatus.FAILED
        ).update(
            delivery_status=Message.DeliveryStatus.QUEUED,
            delivery_due_at=timezone.now(),
            delivery_error="",
            delivery_failing_since=None,
            outbox_seq=outbox_seq,
        )
        if not requeued:
            raise TicketRuleError(f"Reply #{message.pk} has not failed, so there is nothing to send again.")
        reply = Message.objects.select_related("author").get(pk=message.pk)
        reply_queued.send(sender=Message, message=reply)
        record_events(ticket, Actor.agent(acting_user), delivery_changed(reply))
        reply.ticket = ticket
    return reply
