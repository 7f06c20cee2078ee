"""The outbox: each chat's replies go out one at a time, in the order they were queued.

A chat's queue is its customer's queued replies in ``outbox_seq`` order (tickets.queries.chat_queue); only
its first reply, the head, may be sent. Each reply has a task, enqueued with it (tickets.hooks.reply_queued).
A task sends its reply only if the reply is the head, is due, and the chat's previous reply went out at
least TELEGRAM_CHAT_INTERVAL_SECONDS ago (Telegram's per-chat limit); otherwise the task ends at once and
the reply waits without a worker: when the head is sent or fails for good, the same transaction makes the
next reply due (after the interval if one was sent) and enqueues its task for then. Claiming a head and
settling it both hold the customer's row lock, so a reply queued meanwhile is either seen by the settling
transaction or sees the head settled itself: no wake-up is lost. A chat thus has at most one reply in
flight, a busy chat never occupies a worker while it waits, and a reply costs at most two tasks plus its
retries.

A reply waiting for a retry (a network error, a 5xx, a 429, a rejected token) stays the head and holds the
chat's later replies back, so the customer reads them in order; it releases them when it is sent, or when
it fails for good (a permanent error, or the end of the retry window). A re-sent reply queues at the back.

``delivery_due_at`` says when a queued reply's next attempt is due or, while an attempt runs, until when
that attempt holds it (its lease). Every change here is conditional, so of two tasks for one reply only
one sends it, and an outcome is recorded only by the attempt still holding the lease.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from tickets import services
from tickets.models import Customer, Message, Ticket
from tickets.queries import chat_queue, stranded_replies
from tickets.services import rows

from .tasks import deliver_reply

logger = logging.getLogger(__name__)


def enqueue_delivery(message_id, run_after=None):
    """Enqueue the task that delivers the reply ``message_id``, in the caller's transaction."""
    task = deliver_reply.using(run_after=run_after) if run_after else deliver_reply
    task.enqueue(message_id)


def enqueue_queued_reply(sender, message, **kwargs):
    """Receiver of tickets.hooks.reply_queued: the reply's task commits with the reply."""
    enqueue_delivery(message.pk)


def _lock_chat(message_id, skip_locked=False):
    """The customer ``message_id`` is addressed to, locked until the transaction ends (their chat's queue)."""
    customers = Customer.objects.select_for_update(of=("self",), no_key=True, skip_locked=skip_locked)
    return customers.filter(tickets__messages=message_id).first()


# Every delivery's statements, in SQL (tickets.services.rows): through the ORM, building them took more of the
# worker's CPU than anything else it does for a reply (bench/profiles/worker-before-sql.txt).
_MESSAGES, _TICKETS, _CUSTOMERS = (model._meta.db_table for model in (Message, Ticket, Customer))
_QUEUED = Message.DeliveryStatus.QUEUED.value

# The reply with its ticket and customer; on PostgreSQL the customer is locked (their chat's queue) by it too.
_QUEUED_REPLY = (
    f"SELECT {{message}}, {{ticket}}, {{customer}} FROM {_MESSAGES} AS message "
    f"JOIN {_TICKETS} AS ticket ON ticket.id = message.ticket_id "
    f"JOIN {_CUSTOMERS} AS customer ON customer.id = ticket.customer_id "
    "WHERE message.id = %s AND message.delivery_status = %s"
)

# The chat's head: chat_queue(customer_id).values("pk")[:1], with the customer's id as its one parameter.
_CHAT_HEAD = (
    f"SELECT queued.id FROM {_MESSAGES} AS queued JOIN {_TICKETS} AS chat_ticket "
    "ON chat_ticket.id = queued.ticket_id "
    f"WHERE chat_ticket.customer_id = %s AND queued.delivery_status = '{_QUEUED}' "
    "ORDER BY queued.outbox_seq, queued.id LIMIT 1"
)

# A queued reply whose attempt is due by the given time.
_DUE_BY = f"delivery_status = '{_QUEUED}' AND (delivery_due_at IS NULL OR delivery_due_at <= %s)"


def _queued_reply(message_id):
    """The reply ``message_id`` if still queued, with its ticket and customer loaded, the customer locked."""
    sql = _QUEUED_REPLY.format(
        message=rows.columns(Message, "message"),
        ticket=rows.columns(Ticket, "ticket"),
        customer=rows.columns(Customer, "customer"),
    )
    if connection.features.has_select_for_update:
        sql += " FOR NO KEY UPDATE OF customer"
    with connection.cursor() as cursor:
        cursor.execute(sql, [message_id, _QUEUED])
        row = cursor.fetchone()
    if row is None:
        return None
    message_end = len(Message._meta.concrete_fields)
    ticket_end = message_end + len(Ticket._meta.concrete_fields)
    message = rows.load(Message, row[:message_end])
    message.ticket = rows.load(Ticket, row[message_end:ticket_end])
    message.ticket.customer = rows.load(Customer, row[ticket_end:])
    return message


def claim_delivery(message_id, lease: timedelta):
    """Start a delivery attempt if the reply is its chat's head and due; returns the message or None.

    The attempt holds the reply until ``delivery_due_at`` (its lease); the claim is one conditional UPDATE
    (still queued, due, and the head of its chat), so of two tasks for the same reply only one sends it. A
    head the chat's interval holds back is postponed to the end of it, by a task scheduled for then, not by
    waiting here.
    """
    now = timezone.now()
    with transaction.atomic():
        message = _queued_reply(message_id)
        if message is None:
            return None  # sent or failed already
        customer = message.ticket.customer
        interval = timedelta(seconds=settings.TELEGRAM_CHAT_INTERVAL_SECONDS)
        if customer.last_reply_sent_at is not None and customer.last_reply_sent_at + interval > now:
            _make_head_due_at(customer.pk, customer.last_reply_sent_at + interval, now, only=message_id)
            return None
        lease_until = now + lease
        # Every change to a queued reply moves delivery_due_at, so an unchanged one says the row read above is
        # the one claimed (a retry scheduled meanwhile, say, is its own task's to run).
        unchanged, as_read = rows.equals("delivery_due_at", rows.moment(message.delivery_due_at))
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {_MESSAGES} SET delivery_due_at = %s, delivery_attempts = delivery_attempts + 1 "
                f"WHERE id = %s AND {unchanged} AND {_DUE_BY} AND id = ({_CHAT_HEAD})",
                [rows.moment(lease_until), message_id, *as_read, rows.moment(now), customer.pk],
            )
            claimed = cursor.rowcount
        if not claimed:
            return None  # waiting for an earlier reply (which wakes it), held by another attempt, or not due
        message.delivery_due_at, message.delivery_attempts = lease_until, message.delivery_attempts + 1
        return message


def _make_head_due_at(customer_id, due_at: datetime, now, only=None):
    """Move the next attempt of the chat's head (if it is reply ``only``, when given) to ``due_at`` and enqueue
    its task for then; conditional, like a claim: a head held by an attempt or scheduled later is left alone."""
    is_only = "" if only is None else "id = %s AND "
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_MESSAGES} SET delivery_due_at = %s WHERE {is_only}{_DUE_BY} AND id = ({_CHAT_HEAD}) "
            "RETURNING id",
            [rows.moment(due_at), *([] if only is None else [only]), rows.moment(now), customer_id],
        )
        moved = cursor.fetchone()
    if moved is not None:
        enqueue_delivery(moved[0], run_after=due_at)


def record_sent(message, telegram_message_id):
    """The attempt's reply reached Telegram: record it and wake the chat's next reply, after the interval."""
    with transaction.atomic():
        if services.mark_delivered(message, telegram_message_id, lease_until=message.delivery_due_at):
            interval = timedelta(seconds=settings.TELEGRAM_CHAT_INTERVAL_SECONDS)
            _wake_next_reply(message, timezone.now() + interval)


def record_failed(message, reason):
    """The attempt's reply will never be delivered: record why, and wake the chat's next reply now."""
    with transaction.atomic():
        if services.mark_delivery_failed(message, reason, lease_until=message.delivery_due_at):
            _wake_next_reply(message, timezone.now())


def _wake_next_reply(settled, due_at):
    # The customer's lock, taken by the outcome in this transaction, orders this with the next one's claim.
    _make_head_due_at(settled.ticket.customer_id, due_at, due_at)


def schedule_delivery_retry(message, due_at: datetime, error, *, transient, telegram_wait=False):
    """Keep the reply queued (and its chat's later replies waiting), note ``error``, and enqueue its next
    attempt for ``due_at`` — if the attempt still holds its lease. ``transient`` errors count towards the
    retry window; the wait Telegram asks for with a 429 (``telegram_wait``) does not."""
    with transaction.atomic():
        held = services.mark_delivery_retrying(
            message,
            error,
            lease_until=message.delivery_due_at,
            retry_at=due_at,
            transient=transient,
            telegram_wait=telegram_wait,
        )
        if not held:
            logger.warning(
                "Reply %s: attempt %s lost its lease; no retry scheduled.", message.pk, message.delivery_attempts
            )
            return False
        enqueue_delivery(message.pk, run_after=due_at)
    return True


def _live_tasks(lease: timedelta):
    """Delivery tasks that will still run or are running now; a task running longer than a lease died with
    its worker (an attempt gives up sending after half a lease)."""
    return DBTaskResult.objects.filter(task_path=deliver_reply.module_path).filter(
        Q(status="READY") | Q(status="RUNNING", started_at__gt=timezone.now() - lease)
    )


def redrive_stranded_replies(stranded_after: timedelta, lease: timedelta | None = None):
    """Re-enqueue replies that nothing will deliver: the head of their chat's queue, due for longer than
    ``stranded_after``, with no live task (it was lost, or its worker died). Returns how many.

    A reply behind its chat's head, or with a task waiting for a worker, is merely waiting and left alone.
    Each re-drive re-checks under the chat's lock, so it never races the reply's own claim or settling.
    """
    lease = lease or timedelta(seconds=settings.TELEGRAM_DELIVERY_LEASE_SECONDS)
    live = set(_live_tasks(lease).values_list("args_kwargs__args__0", flat=True))
    candidates = [pk for pk in stranded_replies(stranded_after).values_list("pk", flat=True) if pk not in live]
    count = 0
    for message_id in candidates:
        with transaction.atomic():
            customer = _lock_chat(message_id, skip_locked=True)  # locked: someone is at work on this chat
            head = chat_queue(customer.pk).first() if customer is not None else None
            if (
                head is None
                or head.pk != message_id
                or _live_tasks(lease).filter(args_kwargs__args__0=head.pk).exists()
            ):
                continue
            now = timezone.now()
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {_MESSAGES} SET delivery_due_at = %s WHERE id = %s AND {_DUE_BY}",
                    [rows.moment(now), head.pk, rows.moment(now - stranded_after)],
                )
                redriven = cursor.rowcount
            if redriven:
                enqueue_delivery(head.pk)
                count += 1
    if count:
        logger.warning("Re-drove %d stranded replies (due for more than %s, no live task).", count, stranded_after)
    return count
