"""What every ticket service shares: the refusal error, input cleaning, and locking.

Lock order: a transaction that locks a customer and one of their tickets locks the customer first
(``lock_customer``, or ``get_or_create_customer``), then the ticket (``lock_ticket``), so two such
transactions never wait for each other in a circle. The outbox settling a reply (tickets.services.outbox)
locks the customer, the reply, then its ticket (``record_events``' UPDATE) and the chat's next reply (waking
it). That closes no circle: the other changes to a queued reply that lock its ticket first (an erasure, a
re-send) lock the customer before it, and a retry (ticket, then reply) and a settling never wait for the
same reply: only the attempt holding the reply's lease matches it, and only a chat's first reply is ever
claimed. Row locks are ``FOR NO KEY UPDATE``: PostgreSQL checks the foreign keys of a transaction's inserts
and updates at commit with ``FOR KEY SHARE`` on the rows they point to (Django's are deferred), which ``FOR
UPDATE`` would block: a transaction holding a customer ``FOR UPDATE`` while it waits for their ticket would
deadlock with one committing a change to that ticket.
"""

from ..models import Customer, Ticket


class TicketRuleError(Exception):
    """A change the ticket rules refuse; the message says why, in words an agent understands."""


def storable(value):
    """``value`` as PostgreSQL can store it in text or JSON (recursively): without NUL characters, and with
    each lone UTF-16 surrogate (which a JSON ``\\u`` escape can carry and UTF-8 cannot) replaced by U+FFFD."""
    if isinstance(value, str):
        value = value.replace("\x00", "")
        try:
            value.encode()
        except UnicodeEncodeError:
            value = "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in value)
        return value
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


def lock_customer(customer_id):
    """The customer as committed now, locked until the transaction ends: their chat and its outbox queue."""
    return Customer.objects.select_for_update(no_key=True).get(pk=customer_id)


def lock_ticket(ticket_id):
    """The ticket as committed now, with its customer and assignee, locked until the transaction ends.

    Services change a ticket from this fresh copy, never from the caller's object, which may be stale.
    """
    return (
        Ticket.objects.select_related("customer", "assignee")
        .select_for_update(of=("self",), no_key=True)
        .get(pk=ticket_id)
    )
