"""What every ticket service shares: the refusal error, input cleaning, and locking a ticket."""

from ..models import Ticket


class TicketRuleError(Exception):
    """A change the ticket rules refuse; the message says why, in words an agent understands."""


def storable(value):
    """``value`` without NUL characters, which PostgreSQL cannot store in text or JSON (recursively)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


def lock_ticket(ticket_id):
    """The ticket as committed now, with its customer and assignee, locked until the transaction ends.

    Services change a ticket from this fresh copy, never from the caller's object, which may be stale.
    """
    return Ticket.objects.select_related("customer", "assignee").select_for_update(of=("self",)).get(pk=ticket_id)
