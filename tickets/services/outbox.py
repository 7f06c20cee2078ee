"""The outcome of an outbound reply's delivery, recorded for the agent to see.

The outbound channel (bots) leases a queued reply while it sends it, by moving ``delivery_due_at`` to the
end of the lease. Its outcome is recorded only while that lease still holds (``lease_until`` unchanged and
the reply still queued), so of two attempts at one reply only the one holding it decides how it ended.
"""

from django.db import transaction

from ..models import Message, TicketEvent
from .base import lock_ticket
from .history import SYSTEM, record_events


def delivery_changed(message):
    return TicketEvent.Kind.DELIVERY, {
        "message_id": message.pk,
        "status": message.delivery_status,
        "error": message.delivery_error or None,
        "telegram_message_id": message.telegram_message_id,
    }


def mark_delivered(message, telegram_message_id, *, lease_until):
    """The reply reached Telegram as ``telegram_message_id``. False if the attempt had lost its lease."""
    return _record_outcome(
        message,
        lease_until,
        delivery_status=Message.DeliveryStatus.SENT,
        telegram_message_id=telegram_message_id,
        delivery_error="",
    )


def mark_delivery_failed(message, error, *, lease_until):
    """The reply will not reach Telegram, for the reason ``error``. False if the attempt had lost its lease."""
    return _record_outcome(message, lease_until, delivery_status=Message.DeliveryStatus.FAILED, delivery_error=error)


def _record_outcome(message, lease_until, **fields):
    fields["delivery_due_at"] = None
    with transaction.atomic():
        ticket = lock_ticket(message.ticket_id)
        held = Message.objects.filter(
            pk=message.pk, delivery_status=Message.DeliveryStatus.QUEUED, delivery_due_at=lease_until
        ).update(**fields)
        if not held:
            return False
        for name, value in fields.items():
            setattr(message, name, value)
        record_events(ticket, SYSTEM, delivery_changed(message))
    return True
