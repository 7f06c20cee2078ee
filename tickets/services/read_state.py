"""Read state: how far each agent has read in each ticket (G6)."""

from django.db import transaction
from django.utils import timezone

from ..models import Message, ReadCursor, TicketEvent
from ..snapshots import user_data
from .base import TicketRuleError
from .history import Actor, record_events


def advance_read_cursor(ticket, user, message_id):
    """Move the agent's read cursor in the ticket forward to ``message_id``; never backwards.

    Returns True if it moved (and then records a read event). Concurrent advances in any order leave the
    maximum: the move is a conditional UPDATE (``WHERE last_read_message_id < N``), never a read-modify-write.
    """
    if not Message.objects.filter(pk=message_id, ticket_id=ticket.pk).exists():
        raise TicketRuleError(f"Message {message_id} is not in ticket #{ticket.pk}.")
    with transaction.atomic():
        moved = _move_cursor_forward(ticket, user, message_id)
        if not moved:
            _, created = ReadCursor.objects.get_or_create(
                ticket_id=ticket.pk, user=user, defaults={"last_read_message_id": message_id}
            )
            # Lost the race to create it? Then the winner's position may be behind ours.
            moved = created or _move_cursor_forward(ticket, user, message_id)
        if moved:
            read = (TicketEvent.Kind.READ, {"user": user_data(user), "message_id": message_id})
            record_events(ticket, Actor.agent(user), read)
    return bool(moved)


def _move_cursor_forward(ticket, user, message_id):
    return ReadCursor.objects.filter(ticket_id=ticket.pk, user=user, last_read_message_id__lt=message_id).update(
        last_read_message_id=message_id, updated_at=timezone.now()
    )
