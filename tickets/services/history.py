"""The ticket's history: every change a service makes is stored as a TicketEvent in the same transaction.

``record_events`` takes the ticket's next ``seq`` numbers with one ``UPDATE … SET last_seq = last_seq + n
… RETURNING``: the UPDATE holds the ticket's row lock until commit, so a concurrent writer waits and then
numbers after it (a caller already holding that lock knows the numbers, and sends its UPDATE with the
INSERT). That makes each ticket's seq gapless and in commit order (a rollback takes its numbers back with
it). The events are announced (tickets.hooks.announce) once the transaction commits.
"""

from dataclasses import dataclass

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from ..hooks import announce
from ..models import Ticket, TicketEvent
from . import rows


@dataclass(frozen=True)
class Actor:
    """Who makes a change: an agent (with their user), the customer, or the system (the bot, the outbox)."""

    kind: str
    user: AbstractBaseUser | None = None

    @classmethod
    def agent(cls, user):
        """The acting agent; None (no user) means the system, e.g. the bot's automatic replies."""
        return cls(TicketEvent.ActorKind.AGENT, user) if user is not None else SYSTEM


CUSTOMER = Actor(TicketEvent.ActorKind.CUSTOMER)
SYSTEM = Actor(TicketEvent.ActorKind.SYSTEM)


def record_events(ticket, actor, *changes, ticket_fields=None, locked=False):
    """Store one event per ``(kind, data)`` change of ``ticket`` with its next seqs; announce them after commit.

    Must run inside the transaction that makes the changes. ``ticket_fields`` ({name: value}) are set on
    the ticket's row by the same UPDATE that takes the seqs, saving the caller a round trip of its own.
    ``locked`` says ``ticket`` is as the caller's transaction locked it, its ``last_seq`` current: the seqs
    are then known before the UPDATE, which goes with the events' INSERT in one round trip (rows.in_turn)
    and only updates the ticket if its ``last_seq`` is still the one given. A stale one raises (an
    IntegrityError if its seqs are taken, else a RuntimeError), and the caller's transaction rolls back.
    Sets ``ticket.last_seq``; returns the events.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("record_events must run inside the transaction that makes the change.")
    assignments, values = rows.assignments(Ticket, ticket_fields or {})
    sql = f"UPDATE {Ticket._meta.db_table} SET {', '.join(['last_seq = last_seq + %s', *assignments])} WHERE id = %s"
    params = [len(changes), *values, ticket.pk]
    if locked and changes:
        events = _events(ticket, actor, changes, first_seq=ticket.last_seq + 1)
        rows.insert_after(
            (f"{sql} AND last_seq = %s", [*params, ticket.last_seq]),
            *events,
            refusal=f"record_events(locked=True) was given ticket #{ticket.pk} with a stale last_seq.",
        )
        ticket.last_seq += len(changes)
    else:
        with connection.cursor() as cursor:
            cursor.execute(f"{sql} RETURNING last_seq", params)
            (ticket.last_seq,) = cursor.fetchone()
        events = _events(ticket, actor, changes, first_seq=ticket.last_seq - len(changes) + 1)
        rows.insert(*events)
    transaction.on_commit(lambda: announce(events), robust=True)
    return events


def _events(ticket, actor, changes, first_seq):
    return [
        TicketEvent(ticket_id=ticket.pk, seq=seq, kind=kind, actor_kind=actor.kind, actor=actor.user, data=data)
        for seq, (kind, data) in enumerate(changes, start=first_seq)
    ]


def prune_history(older_than):
    """Delete events stored longer ago than ``older_than`` (a timedelta); returns how many.

    A client resuming from before the oldest stored event is told to reload (tickets.queries.events_after).
    """
    deleted, _ = TicketEvent.objects.filter(created_at__lt=timezone.now() - older_than).delete()
    return deleted
