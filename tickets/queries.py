"""Read-side queries about tickets: what an agent has not read yet, each chat's outbox queue, and what the
desk's pages show.

An agent's unread messages in a ticket are the notable ones (all but the customer's bot commands, such as
/start and /status, and the bot's automatic replies) after their read cursor (all of them when they have
none yet), except the ones they wrote themselves. Everything here is a queryset or an expression, so a
list of tickets gets its unread counts in the same single query that fetches the tickets. Whether a
ticket has anything unread is decided from its latest notable message (Ticket.last_notable_message_id and
its author) against the cursor, without counting messages, so the filters stay fast however many tickets
there are; counts are only made for the rows a page shows, in the index range after the cursor.
"""

from django.contrib.auth import get_user_model
from django.db import models
from django.db.models import Count, Exists, F, FilteredRelation, OuterRef, Q, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, JSONObject, Substr
from django.db.models.lookups import GreaterThan
from django.utils import timezone

from .models import RECENT_FIRST, Message, ReadCursor, Ticket, TicketEvent


def notable_messages():
    """Messages that stay unread for an agent until they read them: all but commands and automatic replies."""
    return Message.objects.filter(is_command=False).exclude(direction=Message.Direction.OUT, author__isnull=True)


def unread_messages(user, ticket, last_read):
    """The messages of ``ticket`` that ``user`` has not read, given the id of the last one they read there.

    With the id bound, the database reads only the index range of the ticket's messages after the cursor.
    """
    return notable_messages().filter(ticket=ticket, pk__gt=last_read).exclude(author=user)


def with_last_read(tickets, user):
    """``tickets`` with the alias ``last_read``: the id of the last message ``user`` has read in each (0 if
    they have no cursor there), from one join with their cursors, so that a filter on it is one pass over
    the tickets rather than a lookup per ticket. Applied again for the same user, it joins nothing more."""
    cursor = FilteredRelation("read_cursors", condition=Q(read_cursors__user=user))
    last_read = Coalesce("reader_cursor__last_read_message_id", 0, output_field=models.BigIntegerField())
    return tickets.alias(reader_cursor=cursor).alias(last_read=last_read)


def _has_unread(user):
    """A condition on tickets ``with_last_read`` for ``user``: the ticket has messages they have not read.

    Its latest notable message is after their cursor and is not their own; or it is their own and a notable
    message by someone else lies between the cursor and it (only then are messages looked at).
    """
    after_cursor = GreaterThan(Coalesce("last_notable_message_id", 0), F("last_read"))
    someone_elses = Q(last_notable_author__isnull=True) | ~Q(last_notable_author=user)
    behind_own_reply = Exists(
        unread_messages(user, OuterRef("pk"), OuterRef("last_read")).filter(pk__lt=OuterRef("last_notable_message_id"))
    )
    return Q(after_cursor) & (someone_elses | behind_own_reply)


def with_unread_count(tickets, user):
    """``tickets`` annotated with ``unread_count`` for ``user``: one subquery, evaluated only for the rows
    fetched, each reading the ticket's messages after the cursor."""
    counts = (
        unread_messages(user, OuterRef("pk"), OuterRef("last_read"))
        .order_by()
        .values("ticket")
        .annotate(unread=Count("pk"))
        .values("unread")
    )
    unread_count = Coalesce(Subquery(counts), 0, output_field=models.IntegerField())
    return with_last_read(tickets, user).annotate(unread_count=unread_count)


def with_unread_messages(tickets, user):
    """The tickets in which ``user`` has something unread."""
    return with_last_read(tickets, user).filter(_has_unread(user))


def all_read(tickets, user):
    """The tickets in which ``user`` has read everything."""
    return with_last_read(tickets, user).filter(~_has_unread(user))


def unread_count(ticket, user):
    """How many messages of ``ticket`` (a ticket or its id) ``user`` has not read (one query)."""
    cursor = ReadCursor.objects.filter(ticket=ticket, user=user).values("last_read_message_id")[:1]
    last_read = Coalesce(Subquery(cursor), 0, output_field=models.BigIntegerField())
    return unread_messages(user, ticket, last_read).count()


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
    return list(tickets.order_by(*RECENT_FIRST)[:INBOX_PAGE_SIZE])


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
