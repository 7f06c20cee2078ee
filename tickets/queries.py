"""Read-side queries about tickets: what an agent has not read yet, and each chat's outbox queue.

An agent's unread messages in a ticket are those after their read cursor (all of them when they have
none yet), except the ones they wrote themselves, the customer's bot commands (/start, /status) and the
bot's automatic replies. Everything here is a queryset or an expression, so a list of tickets gets its
unread counts in the same single query that fetches the tickets.
"""

from django.db import models
from django.db.models import Count, Exists, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import Message, ReadCursor, Ticket, TicketEvent


def unread_messages(user):
    """Messages, across all tickets, that ``user`` has not read yet."""
    cursor = ReadCursor.objects.filter(ticket=OuterRef("ticket"), user=user).values("last_read_message_id")[:1]
    last_read = Coalesce(Subquery(cursor), 0, output_field=models.BigIntegerField())
    automatic_reply = Q(direction=Message.Direction.OUT, author__isnull=True)
    return Message.objects.filter(id__gt=last_read, is_command=False).exclude(author=user).exclude(automatic_reply)


def unread_count_expression(user):
    """An expression for a Ticket queryset: how many messages of the ticket ``user`` has not read."""
    counts = (
        unread_messages(user)
        .filter(ticket=OuterRef("pk"))
        .order_by()
        .values("ticket")
        .annotate(unread=Count("pk"))
        .values("unread")
    )
    return Coalesce(Subquery(counts), 0, output_field=models.IntegerField())


def has_unread_expression(user):
    """A condition for a Ticket queryset: the ticket has messages ``user`` has not read."""
    return Exists(unread_messages(user).filter(ticket=OuterRef("pk")))


def with_unread_count(tickets, user):
    """``tickets`` annotated with ``unread_count`` for ``user`` (one subquery, no extra queries per ticket)."""
    return tickets.annotate(unread_count=unread_count_expression(user))


def with_unread_messages(tickets, user):
    """The tickets in which ``user`` has something unread."""
    return tickets.filter(has_unread_expression(user))


def all_read(tickets, user):
    """The tickets in which ``user`` has read everything."""
    return tickets.filter(~has_unread_expression(user))


def unread_count(ticket, user):
    """How many messages of ``ticket`` ``user`` has not read (one query)."""
    return unread_messages(user).filter(ticket=ticket).count()


def chat_queue(customer_id):
    """The replies queued to a customer, in the order they go out (one at a time: bots.outbox)."""
    return Message.objects.filter(
        ticket__customer_id=customer_id, delivery_status=Message.DeliveryStatus.QUEUED
    ).order_by("outbox_seq", "pk")


def queue_heads():
    """The first queued reply of every chat: the only one of its chat that may be sent now."""
    earlier = Message.objects.filter(
        delivery_status=Message.DeliveryStatus.QUEUED,
        ticket__customer_id=OuterRef("ticket__customer_id"),
        outbox_seq__lt=OuterRef("outbox_seq"),
    )
    return Message.objects.filter(delivery_status=Message.DeliveryStatus.QUEUED).filter(~Exists(earlier))


def stranded_replies(stranded_after):
    """Heads of their chat's queue still waiting ``stranded_after`` (a timedelta) after they were due: few
    workers for the backlog, or their task was lost or their worker died holding them (the outbox sweep
    tells which). Replies behind their chat's head are waiting their turn, not stranded."""
    return queue_heads().filter(delivery_due_at__lt=timezone.now() - stranded_after)


def count_stranded_replies(stranded_after):
    return stranded_replies(stranded_after).count()


def replies_waiting(ticket):
    """The ticket's queued replies waiting behind an earlier reply to the same customer: {reply id: that
    reply's id}. They go out once it is sent, or has failed."""
    queue = list(chat_queue(ticket.customer_id).values_list("pk", "ticket_id"))
    if not queue:
        return {}
    head = queue[0][0]
    return {pk: head for pk, ticket_id in queue[1:] if ticket_id == ticket.pk}


def events_after(ticket_id, seq):
    """The ticket's stored events with a seq above ``seq``, oldest first (G12's replay).

    None when some of them are no longer stored (older than the history's retention): the client must
    reload instead. An empty list means the client is up to date.
    """
    events = list(TicketEvent.objects.filter(ticket_id=ticket_id, seq__gt=seq).order_by("seq"))
    if any(event.seq != seq + offset for offset, event in enumerate(events, start=1)):
        return None
    if not events and Ticket.objects.filter(pk=ticket_id, last_seq__gt=seq).exists():
        return None
    return events
