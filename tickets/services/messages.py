"""Messages: what customers write (and edit), and the replies agents queue for Telegram."""

import uuid

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..hooks import reply_queued
from ..models import Message, Ticket, TicketEvent
from ..snapshots import message_data
from .base import TicketRuleError, lock_ticket, storable
from .customers import get_or_create_customer
from .history import CUSTOMER, Actor, record_events
from .tickets import get_or_open_ticket, ticket_changed

TELEGRAM_TEXT_LIMIT = 4096


def message_stored(message):
    return TicketEvent.Kind.MESSAGE, {"message": message_data(message)}


def record_inbound_message(
    profile,
    *,
    text,
    telegram_message_id,
    attachment=None,
    reply_to_telegram_message_id=None,
):
    """Store a customer's message in their active ticket, opening one if needed.

    Returns (message, ticket_opened). A customer writing to a pending ticket puts it back to open.
    """
    text, attachment = storable(text), storable(attachment)
    with transaction.atomic():
        customer = get_or_create_customer(profile)
        ticket, opened = get_or_open_ticket(customer, subject=_subject_from(text, attachment))
        message = Message.objects.create(
            ticket=ticket,
            direction=Message.Direction.IN,
            text=text,
            attachment=attachment,
            telegram_message_id=telegram_message_id,
            reply_to_telegram_message_id=reply_to_telegram_message_id,
        )
        updates = {"last_message_at": message.created_at, "updated_at": message.created_at}
        changes = [message_stored(message)]
        if ticket.status == Ticket.Status.PENDING:
            updates["status"] = Ticket.Status.OPEN.value
        Ticket.objects.filter(pk=ticket.pk).update(**updates)
        for name, value in updates.items():
            setattr(ticket, name, value)
        if "status" in updates:
            changes.append(ticket_changed(ticket, status=[Ticket.Status.PENDING.value, ticket.status]))
        record_events(ticket, CUSTOMER, *changes)
        message.ticket = ticket
    return message, opened


def _subject_from(text, attachment):
    if text:
        return " ".join(text.split())[:80]
    if attachment:
        return f"[{attachment.get('kind', 'attachment')}]"
    return ""


def record_message_edit(telegram_user_id, telegram_message_id, *, text, edited_at, attachment=None):
    """Apply a customer's edit to the message they sent; returns it, or None if we never stored it."""
    text, attachment = storable(text), storable(attachment)
    with transaction.atomic():
        message = (
            Message.objects.filter(
                direction=Message.Direction.IN,
                telegram_message_id=telegram_message_id,
                ticket__customer__telegram_user_id=telegram_user_id,
            )
            .order_by("-id")
            .first()
        )
        if message is None:
            return None
        # The ticket's lock orders this edit's event among the ticket's others, and the message's with it.
        ticket = lock_ticket(message.ticket_id)
        message = Message.objects.select_for_update(of=("self",)).select_related("author").get(pk=message.pk)
        message.text = text
        if attachment is not None:
            message.attachment = attachment
        message.edited_at = edited_at
        message.save(update_fields=["text", "attachment", "edited_at"])
        record_events(ticket, CUSTOMER, (TicketEvent.Kind.EDIT, {"message": message_data(message)}))
        message.ticket = ticket
    return message


def queue_reply(ticket, text, *, author, client_msg_id=None, attachment=None):
    """Store an outbound reply and hand it to the outbound channel in the same transaction (the outbox).

    ``author`` is the acting agent, or None for the bot's automatic replies. With ``client_msg_id`` the
    call is idempotent: a repeat returns the reply already stored. Returns (message, created).
    """
    text, attachment = storable(text or "").strip(), storable(attachment)
    if not text and not attachment:
        raise TicketRuleError("A reply needs some text.")
    if len(text) > TELEGRAM_TEXT_LIMIT:
        raise TicketRuleError(f"A reply can be at most {TELEGRAM_TEXT_LIMIT} characters; this one has {len(text)}.")
    if client_msg_id is not None:
        try:
            client_msg_id = uuid.UUID(str(client_msg_id))
        except ValueError:
            raise TicketRuleError("client_msg_id must be a UUID.") from None
    with transaction.atomic():
        # Locked, so a colleague closing the ticket right now cannot slip between this check and the insert.
        current = lock_ticket(ticket.pk)
        if client_msg_id is not None:
            existing = Message.objects.filter(ticket=current, client_msg_id=client_msg_id).first()
            if existing is not None:
                return existing, False
        if current.status == Ticket.Status.CLOSED:
            raise TicketRuleError(f"Ticket #{current.pk} is closed; the customer's next message opens a new one.")
        now = timezone.now()
        try:
            with transaction.atomic():
                message = Message.objects.create(
                    ticket=current,
                    direction=Message.Direction.OUT,
                    author=author,
                    text=text,
                    attachment=attachment,
                    client_msg_id=client_msg_id,
                    delivery_status=Message.DeliveryStatus.QUEUED,
                    delivery_due_at=now,
                )
        except IntegrityError:
            existing = Message.objects.filter(ticket=current, client_msg_id=client_msg_id).first()
            if existing is None:
                raise
            return existing, False
        reply_queued.send(sender=Message, message=message)
        current.last_message_at = current.updated_at = now
        Ticket.objects.filter(pk=current.pk).update(last_message_at=now, updated_at=now)
        record_events(current, Actor.agent(author), message_stored(message))
        message.ticket = current
    return message, True
