"""Replies: what an agent (or the bot) sends a customer, checked against Telegram's limits and queued.

A reply is stored queued and handed to the outbound channel in the same transaction (tickets.hooks.
reply_queued: bots enqueues its delivery), numbered in its customer's outbox queue, so each chat's replies
are delivered one at a time in the order they were queued.
"""

import uuid

from django.db import connection, transaction
from django.utils import timezone

from ..hooks import reply_queued
from ..models import Customer, Message, Ticket
from . import rows
from .base import TicketRuleError, lock_ticket, storable
from .history import Actor, record_events
from .messages import message_stored

TELEGRAM_TEXT_LIMIT = 4096
TELEGRAM_CAPTION_LIMIT = 1024
# What a reply can carry, by a Telegram file_id; each goes out with its own send method (bots.delivery).
SENDABLE_ATTACHMENTS = ("photo", "document", "voice", "video", "audio", "animation", "sticker")
CAPTIONLESS_ATTACHMENTS = ("sticker",)


def check_reply(text, attachment):
    """Refuse, with the reason, a reply Telegram would refuse: before it is queued, never after."""
    if not text and not attachment:
        raise TicketRuleError("A reply needs some text.")
    if not attachment:
        if len(text) > TELEGRAM_TEXT_LIMIT:
            raise TicketRuleError(f"A reply can be at most {TELEGRAM_TEXT_LIMIT} characters; this one has {len(text)}.")
        return
    kind = attachment.get("kind") if isinstance(attachment, dict) else None
    if kind not in SENDABLE_ATTACHMENTS:
        what = f"An attachment of kind “{kind}”" if kind else "An attachment without a kind"
        raise TicketRuleError(
            f"{what} cannot be sent to a customer; "
            f"a reply can carry a {', '.join(SENDABLE_ATTACHMENTS[:-1])} or {SENDABLE_ATTACHMENTS[-1]}."
        )
    if not isinstance(attachment.get("file_id"), str) or not attachment["file_id"]:
        raise TicketRuleError(f"The {kind} has no Telegram file_id to send it by.")
    if text and kind in CAPTIONLESS_ATTACHMENTS:
        raise TicketRuleError(f"A {kind} cannot carry text in Telegram; send the text as a reply of its own.")
    if len(text) > TELEGRAM_CAPTION_LIMIT:
        raise TicketRuleError(
            f"The text of a reply with an attachment (its caption) can be at most {TELEGRAM_CAPTION_LIMIT} "
            f"characters; this one has {len(text)}. Send the text as a reply of its own."
        )


def take_outbox_seq(customer_id):
    """The next place in the customer's outbox queue. Locks the customer until the transaction ends, so
    the chat's replies are numbered in commit order (and the lock order is customer, then ticket)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Customer._meta.db_table} SET last_reply_seq = last_reply_seq + 1 WHERE id = %s "
            "RETURNING last_reply_seq",
            [customer_id],
        )
        (outbox_seq,) = cursor.fetchone()
    return outbox_seq


def check_can_reach(ticket):
    """Refuse a reply to a closed ticket or to a forgotten customer (``ticket`` as locked now)."""
    if ticket.status == Ticket.Status.CLOSED:
        raise TicketRuleError(f"Ticket #{ticket.pk} is closed; the customer's next message opens a new one.")
    if ticket.customer.erased_at is not None:
        raise TicketRuleError(f"Ticket #{ticket.pk}'s customer was forgotten; they cannot be written to.")


def queue_reply(ticket, text, *, author, client_msg_id=None, attachment=None, locked=False):
    """Store an outbound reply and hand it to the outbound channel in the same transaction (the outbox).

    ``author`` is the acting agent, or None for the bot's automatic replies. With ``client_msg_id`` the
    call is idempotent: a repeat returns the reply already stored. ``locked`` says ``ticket`` and its
    customer are as the caller's transaction locked them, their ``last_seq`` and ``last_reply_seq`` current
    (the bot answering the message it has just stored), so they are not locked and read again. Returns
    (message, created).
    """
    text, attachment = storable(text or "").strip(), storable(attachment)
    check_reply(text, attachment)
    if client_msg_id is not None:
        try:
            client_msg_id = uuid.UUID(str(client_msg_id))
        except ValueError:
            raise TicketRuleError("client_msg_id must be a UUID.") from None
    # A refusal below (check_can_reach) is rolled back alone, so a caller may go on; the bot's ticket, as its
    # transaction locked it, cannot be refused, so there is nothing to roll back alone and no savepoint.
    with transaction.atomic(savepoint=not locked):
        if locked:
            current, outbox_seq = ticket, ticket.customer.last_reply_seq + 1  # taken as the reply is stored
        else:
            outbox_seq = take_outbox_seq(ticket.customer_id)
            # Locked, so a colleague closing the ticket right now cannot slip between this check and the insert.
            current = lock_ticket(ticket.pk)
        if client_msg_id is not None:
            # The customer's lock (the outbox seq) orders two sends of one client_msg_id: the second finds the
            # first here, committed, so the insert below needs no savepoint to recover from the constraint.
            existing = Message.objects.filter(ticket=current, client_msg_id=client_msg_id).first()
            if existing is not None:
                return existing, False
        check_can_reach(current)
        now = timezone.now()
        message = Message(
            ticket=current,
            direction=Message.Direction.OUT,
            author=author,
            text=text,
            attachment=attachment,
            client_msg_id=client_msg_id,
            delivery_status=Message.DeliveryStatus.QUEUED,
            delivery_due_at=now,
            outbox_seq=outbox_seq,
        )
        if locked:
            _insert_numbered(message, current.customer)
        else:
            rows.insert(message)
        reply_queued.send(sender=Message, message=message)
        updates = {"last_message_at": now, "updated_at": now}
        if author is not None:  # an agent's reply is notable; the bot's automatic replies are not
            updates |= {"last_notable_message_id": message.pk, "last_notable_author_id": author.pk}
        for name, value in updates.items():
            setattr(current, name, value)
        record_events(current, Actor.agent(author), message_stored(message), ticket_fields=updates, locked=True)
        message.ticket = current
    return message, True


def _insert_numbered(message, customer):
    """Store ``message``, numbered next in the queue of ``customer`` as the caller's transaction locked their
    row (it must hold that lock: it orders the customer's replies, and comes before the ticket's), and take
    that number in the same round trip; a stale row is refused (rows.insert_after)."""
    rows.insert_after(
        (
            f"UPDATE {Customer._meta.db_table} SET last_reply_seq = %s WHERE id = %s AND last_reply_seq = %s",
            [message.outbox_seq, customer.pk, message.outbox_seq - 1],
        ),
        message,
        refusal=f"Customer {customer.pk}'s outbox queue is not at {message.outbox_seq - 1} as the caller read it: "
        "their row as passed was stale.",
    )
    customer.last_reply_seq = message.outbox_seq
