"""Read-side queries about tickets: what an agent has not read yet, each chat's outbox queue, and what the
desk's pages show.

An agent's unread messages in a ticket are those after their read cursor (all of them when they have
none yet), except the ones they wrote themselves, the customer's bot commands (/start, /status) and the
bot's automatic replies. Everything here is a queryset or an expression, so a list of tickets gets its
unread counts in the same single query that fetches the tickets.
"""

from django.contrib.auth import get_user_model
from django.db import models
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, JSONObject, Substr
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
    # The ticket's seq first: every event up to it is committed, so the events read next must include
    # them all unless they were pruned (read the other way round, an event committed in between would
    # look pruned).
    last_seq = Ticket.objects.filter(pk=ticket_id).values_list("last_seq", flat=True).first() or 0
    events = list(TicketEvent.objects.filter(ticket_id=ticket_id, seq__gt=seq).order_by("seq"))
    if any(event.seq != seq + offset for offset, event in enumerate(events, start=1)):
        return None
    if len(events) < last_seq - seq:
        return None
    return events


def outbox_backlog(failed_since):
    """The outbox at a glance, for the health check: replies queued, the oldest one's creation time,
    and replies that failed among those created since ``failed_since``."""
    replies = Message.objects.filter(direction=Message.Direction.OUT)
    queued = replies.filter(delivery_status=Message.DeliveryStatus.QUEUED).aggregate(
        count=Count("pk"), oldest=models.Min("created_at")
    )
    failed = replies.filter(delivery_status=Message.DeliveryStatus.FAILED, created_at__gte=failed_since).count()
    return queued["count"], queued["oldest"], failed


# --- The desk -------------------------------------------------------------------------------------

# The inbox's views of the tickets, and the statuses its filter offers (None: every status).
INBOX_VIEWS = ("mine", "unassigned", "all")
INBOX_STATUSES = {
    "active": Ticket.ACTIVE_STATUSES,
    "open": (Ticket.Status.OPEN,),
    "pending": (Ticket.Status.PENDING,),
    "resolved": (Ticket.Status.RESOLVED,),
    "closed": (Ticket.Status.CLOSED,),
    "any": None,
}
INBOX_PAGE_SIZE = 50
PREVIEW_LENGTH = 160
# How many of a ticket's latest messages its desk page shows (the admin has the whole conversation).
CONVERSATION_LENGTH = 200


def inbox_tickets(tickets, user, *, view, status):
    """``tickets`` narrowed to the inbox ``view`` ("mine", "unassigned", "all") and ``status`` filter."""
    if view == "mine":
        tickets = tickets.filter(assignee=user)
    elif view == "unassigned":
        tickets = tickets.filter(assignee__isnull=True)
    if INBOX_STATUSES[status] is not None:
        tickets = tickets.filter(status__in=INBOX_STATUSES[status])
    return tickets


def inbox_page(user, *, view="all", status="active", before=None, ticket_id=None):
    """One page (INBOX_PAGE_SIZE tickets) of the inbox as ``user`` sees it, most recent conversation first,
    in ONE query.

    Each ticket comes with its customer and assignee, ``unread_count`` for ``user`` and ``last_message``
    (a dict: id, direction, the text's start, the attachment's summary, the author's id and names).
    ``before`` is the (last_message_at, id) of the previous page's last ticket; ``ticket_id`` asks for
    that one ticket, if it is in the view (the inbox adding a ticket it hears of live).
    """
    tickets = inbox_tickets(Ticket.objects.select_related("customer", "assignee"), user, view=view, status=status)
    if ticket_id is not None:
        tickets = tickets.filter(pk=ticket_id)
    if before is not None:
        tickets = tickets.filter(_older_than(*before))
    latest = (
        Message.objects.filter(ticket=OuterRef("pk"))
        .order_by("-id")
        .values(
            preview=JSONObject(
                id="id",
                direction="direction",
                text=Substr("text", 1, PREVIEW_LENGTH),
                attachment=KeyTextTransform("summary", "attachment"),
                author_id="author_id",
                author_first_name="author__first_name",
                author_last_name="author__last_name",
                author_username="author__username",
            )
        )[:1]
    )
    tickets = with_unread_count(tickets, user).annotate(last_message=Subquery(latest, output_field=models.JSONField()))
    return list(tickets.order_by(F("last_message_at").desc(nulls_last=True), "-id")[:INBOX_PAGE_SIZE])


def _older_than(last_message_at, ticket_id):
    """Tickets after (last_message_at, id) in the inbox's order; tickets without messages come last."""
    if last_message_at is None:
        return Q(last_message_at__isnull=True, pk__lt=ticket_id)
    return (
        Q(last_message_at__lt=last_message_at)
        | Q(last_message_at=last_message_at, pk__lt=ticket_id)
        | Q(last_message_at__isnull=True)
    )


def conversation(ticket):
    """The ticket's latest CONVERSATION_LENGTH messages with their authors, oldest first, and whether older
    ones exist."""
    messages = list(ticket.messages.select_related("author").order_by("-id")[: CONVERSATION_LENGTH + 1])
    return messages[:CONVERSATION_LENGTH][::-1], len(messages) > CONVERSATION_LENGTH


def read_positions(ticket):
    """How far each agent has read in the ticket: (user, last read message id) pairs, in one query."""
    cursors = ReadCursor.objects.filter(ticket=ticket).select_related("user").order_by("user_id")
    return [(cursor.user, cursor.last_read_message_id) for cursor in cursors]


def agents():
    """Everyone a ticket can be assigned to: the active staff users, by name."""
    return get_user_model().objects.filter(is_staff=True, is_active=True).order_by("first_name", "username")
