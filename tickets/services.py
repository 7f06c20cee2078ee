"""The ticket lifecycle: the only code that changes customers, tickets, messages and read cursors.

Each function validates, writes inside a transaction, and announces what changed through
tickets.signals.announced once that transaction commits, so nobody hears of a write that rolled back.
Race safety comes from the database constraints in tickets.models, not from locks in this process.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from bots.tasks import deliver_reply

from .models import Customer, Message, ReadCursor, Ticket
from .queries import stranded_replies
from .signals import announced

logger = logging.getLogger(__name__)

TELEGRAM_TEXT_LIMIT = 4096

ALLOWED_TRANSITIONS = {
    Ticket.Status.OPEN: {Ticket.Status.PENDING, Ticket.Status.RESOLVED, Ticket.Status.CLOSED},
    Ticket.Status.PENDING: {Ticket.Status.OPEN, Ticket.Status.RESOLVED, Ticket.Status.CLOSED},
    Ticket.Status.RESOLVED: {Ticket.Status.OPEN, Ticket.Status.CLOSED},
    Ticket.Status.CLOSED: set(),
}


class TicketRuleError(Exception):
    """A change the ticket rules refuse; the message says why, in words an agent understands."""


@dataclass(frozen=True)
class TelegramProfile:
    """Who wrote to the bot, as Telegram describes them."""

    user_id: int
    first_name: str = ""
    last_name: str = ""
    username: str = ""
    language_code: str = ""


def storable(value):
    """``value`` without NUL characters, which PostgreSQL cannot store in text or JSON (recursively)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


def announce(kind, **objects):
    """Send ``announced`` once the current transaction commits (at once outside a transaction)."""
    transaction.on_commit(lambda: announced.send(sender=Ticket, kind=kind, **objects), robust=True)


# --- Customers and tickets ------------------------------------------------------------------------


def get_or_create_customer(profile):
    """The customer for a Telegram user, created on first contact and kept up to date with their profile."""
    fields = storable(
        {
            "first_name": profile.first_name or "",
            "last_name": profile.last_name or "",
            "username": profile.username or "",
            "language_code": profile.language_code or "",
        }
    )
    # get_or_create retries the lookup when a concurrent first message inserted the row first.
    customer, created = Customer.objects.get_or_create(telegram_user_id=profile.user_id, defaults=fields)
    if not created and any(getattr(customer, name) != value for name, value in fields.items()):
        Customer.objects.filter(pk=customer.pk).update(**fields)
        for name, value in fields.items():
            setattr(customer, name, value)
    return customer


def get_or_open_ticket(customer, subject=""):
    """The customer's active ticket, or a new open one. Returns (ticket, opened)."""
    with transaction.atomic():
        for _ in range(3):
            ticket = _active_ticket(customer, lock=True)
            if ticket is not None:
                return ticket, False
            try:
                with transaction.atomic():
                    ticket = Ticket.objects.create(customer=customer, subject=subject[:200])
            except IntegrityError:
                # A concurrent message opened it first (one_active_ticket_per_customer): use that one.
                continue
            announce("ticket.changed", ticket=ticket)
            return ticket, True
    raise TicketRuleError(f"Could not find or open a ticket for customer {customer.pk}.")


def _active_ticket(customer, lock=False):
    """The customer's open or pending ticket, if any; with ``lock``, locked for this transaction.

    Locking matters to writers: PostgreSQL re-checks the status once a concurrent change (an agent
    closing the ticket) commits, so a message never lands in a ticket that was closed meanwhile.
    """
    tickets = Ticket.objects.select_related("customer", "assignee")
    if lock:
        tickets = tickets.select_for_update(of=("self",))
    return tickets.filter(customer=customer, status__in=Ticket.ACTIVE_STATUSES).first()


def assign_ticket(ticket, assignee):
    """Give the ticket to an agent (or to nobody, with ``assignee=None``)."""
    if assignee is not None and not assignee.is_staff:
        raise TicketRuleError(f"{assignee} is not an agent (staff user) and cannot be assigned tickets.")
    with transaction.atomic():
        Ticket.objects.filter(pk=ticket.pk).update(assignee=assignee, updated_at=timezone.now())
        ticket.assignee = assignee
        announce("ticket.changed", ticket=ticket)
    return ticket


def change_ticket_status(ticket, status):
    """Move the ticket to ``status`` if the lifecycle allows it (see ALLOWED_TRANSITIONS)."""
    status = Ticket.Status(status)
    with transaction.atomic():
        current = Ticket.objects.select_for_update().get(pk=ticket.pk)
        if status == current.status:
            ticket.status = current.status
            return ticket
        if status not in ALLOWED_TRANSITIONS[current.status]:
            raise TicketRuleError(
                f"Ticket #{ticket.pk} is {current.get_status_display().lower()} and cannot become "
                f"{status.label.lower()}."
            )
        try:
            with transaction.atomic():
                Ticket.objects.filter(pk=ticket.pk).update(status=status, updated_at=timezone.now())
        except IntegrityError:
            other = _active_ticket(current.customer)
            raise TicketRuleError(
                f"Ticket #{ticket.pk} cannot be reopened: {current.customer} already has "
                f"ticket #{other.pk if other else '?'} open. Continue there."
            ) from None
        ticket.status = status
        announce("ticket.changed", ticket=ticket)
    return ticket


def start_new_ticket(customer):
    """Resolve the customer's active ticket, if any, and open a fresh one (the /new command)."""
    with transaction.atomic():
        current = _active_ticket(customer)
        if current is not None:
            change_ticket_status(current, Ticket.Status.RESOLVED)
        ticket, _ = get_or_open_ticket(customer)
    return ticket


# --- Messages -------------------------------------------------------------------------------------


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
        if ticket.status == Ticket.Status.PENDING:
            updates["status"] = Ticket.Status.OPEN
        Ticket.objects.filter(pk=ticket.pk).update(**updates)
        for name, value in updates.items():
            setattr(ticket, name, value)
        message.ticket = ticket
        announce("message.created", ticket=ticket, message=message)
        if "status" in updates:
            announce("ticket.changed", ticket=ticket)
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
            Message.objects.select_for_update()
            .select_related("ticket__customer")
            .filter(
                direction=Message.Direction.IN,
                telegram_message_id=telegram_message_id,
                ticket__customer__telegram_user_id=telegram_user_id,
            )
            .order_by("-id")
            .first()
        )
        if message is None:
            return None
        message.text = text
        if attachment is not None:
            message.attachment = attachment
        message.edited_at = edited_at
        message.save(update_fields=["text", "attachment", "edited_at"])
        announce("message.edited", ticket=message.ticket, message=message)
    return message


def queue_reply(ticket, text, *, author=None, client_msg_id=None, attachment=None):
    """Store an outbound reply and enqueue its delivery in the same transaction (the outbox).

    ``author`` is the agent, or None for the bot's automatic replies. With ``client_msg_id`` the call
    is idempotent: a repeat returns the reply already stored. Returns (message, created).
    """
    text, attachment = storable(text or "").strip(), storable(attachment)
    if not text and not attachment:
        raise TicketRuleError("A reply needs some text.")
    if len(text) > TELEGRAM_TEXT_LIMIT:
        raise TicketRuleError(f"A reply can be at most {TELEGRAM_TEXT_LIMIT} characters; this one has {len(text)}.")
    if client_msg_id is not None:
        client_msg_id = uuid.UUID(str(client_msg_id))
    with transaction.atomic():
        # Locked, so a colleague closing the ticket right now cannot slip between this check and the insert.
        status = Ticket.objects.select_for_update().values_list("status", flat=True).get(pk=ticket.pk)
        if status == Ticket.Status.CLOSED:
            raise TicketRuleError(f"Ticket #{ticket.pk} is closed; the customer's next message opens a new one.")
        now = timezone.now()
        try:
            with transaction.atomic():
                message = Message.objects.create(
                    ticket=ticket,
                    direction=Message.Direction.OUT,
                    author=author,
                    text=text,
                    attachment=attachment,
                    client_msg_id=client_msg_id,
                    delivery_status=Message.DeliveryStatus.QUEUED,
                    delivery_due_at=now,
                )
        except IntegrityError:
            existing = Message.objects.filter(ticket=ticket, client_msg_id=client_msg_id).first()
            if existing is None:
                raise
            return existing, False
        enqueue_delivery(message)
        Ticket.objects.filter(pk=ticket.pk).update(last_message_at=now, updated_at=now)
        ticket.last_message_at = now
        announce("message.created", ticket=ticket, message=message)
    return message, True


# --- Outbound delivery (called by bots.delivery) ------------------------------------------------------


def _due(queryset, now):
    return queryset.filter(delivery_status=Message.DeliveryStatus.QUEUED).filter(
        Q(delivery_due_at__isnull=True) | Q(delivery_due_at__lte=now)
    )


def postpone_delivery(message, due_at: datetime):
    """Move a due reply's next attempt to ``due_at`` (Telegram's flood limits) without counting an attempt.

    Conditional like a claim: a reply that another attempt holds, or that is already done, is left alone.
    """
    with transaction.atomic():
        moved = _due(Message.objects.filter(pk=message.pk), timezone.now()).update(delivery_due_at=due_at)
        if moved:
            enqueue_delivery(message, run_after=due_at)
    return bool(moved)


def claim_delivery(message_id, lease: timedelta):
    """Start a delivery attempt if the reply is still queued and due; returns the message or None.

    One conditional UPDATE, so of two tasks for the same reply only one sends it. The attempt holds
    the reply until ``delivery_due_at`` (its lease); the outcome functions below only record an
    outcome while the lease is still this attempt's, and the outbox sweep re-drives the reply if the
    worker died holding it.
    """
    now = timezone.now()
    lease_until = now + lease
    claimed = _due(Message.objects.filter(pk=message_id), now).update(
        delivery_due_at=lease_until, delivery_attempts=F("delivery_attempts") + 1
    )
    if not claimed:
        return None
    return Message.objects.select_related("ticket__customer").get(pk=message_id, delivery_due_at=lease_until)


def _record_outcome(message, **fields):
    """Write an attempt's outcome if the attempt still holds the reply's lease; True if it did."""
    held = Message.objects.filter(
        pk=message.pk, delivery_status=Message.DeliveryStatus.QUEUED, delivery_due_at=message.delivery_due_at
    ).update(**fields)
    if not held:
        logger.warning(
            "Reply %s: attempt %s lost its lease; its outcome is dropped.", message.pk, message.delivery_attempts
        )
        return False
    for name, value in fields.items():
        setattr(message, name, value)
    return True


def mark_delivered(message, telegram_message_id):
    with transaction.atomic():
        if _record_outcome(
            message,
            delivery_status=Message.DeliveryStatus.SENT,
            telegram_message_id=telegram_message_id,
            delivery_due_at=None,
            delivery_error="",
        ):
            announce("message.delivery", ticket=message.ticket, message=message)


def schedule_delivery_retry(message, due_at: datetime, error):
    """Keep the reply queued and enqueue its next attempt for ``due_at``."""
    with transaction.atomic():
        if _record_outcome(message, delivery_due_at=due_at, delivery_error=error):
            enqueue_delivery(message, run_after=due_at)


def mark_delivery_failed(message, error):
    with transaction.atomic():
        if _record_outcome(
            message, delivery_status=Message.DeliveryStatus.FAILED, delivery_due_at=None, delivery_error=error
        ):
            announce("message.delivery", ticket=message.ticket, message=message)


def redrive_stranded_replies(stranded_after: timedelta):
    """Re-enqueue replies still queued long after they were due: their task was lost or its worker died.

    Returns how many were re-driven. A reply whose worker is merely slow is protected by its lease,
    so a re-drive at worst costs a no-op task.
    """
    count = 0
    with transaction.atomic():
        for message in stranded_replies(stranded_after).select_for_update(skip_locked=True):
            # Conditional again: without row locks (SQLite) a claim could have come in since the SELECT.
            if not stranded_replies(stranded_after).filter(pk=message.pk).update(delivery_due_at=timezone.now()):
                continue
            enqueue_delivery(message)
            count += 1
    if count:
        logger.warning("Re-drove %d stranded replies (queued for more than %s).", count, stranded_after)
    return count


def enqueue_delivery(message, run_after=None):
    """Enqueue the task that delivers ``message``; call it inside the transaction that queues the reply."""
    task = deliver_reply.using(run_after=run_after) if run_after else deliver_reply
    task.enqueue(message.pk)


# --- Read state -----------------------------------------------------------------------------------


def advance_read_cursor(ticket, user, message_id):
    """Move the agent's read cursor in the ticket forward to ``message_id``; never backwards.

    Returns True if it moved. Concurrent advances in any order leave the maximum: the move is a
    conditional UPDATE (``WHERE last_read_message_id < N``), never a read-modify-write.
    """
    if not Message.objects.filter(pk=message_id, ticket=ticket).exists():
        raise TicketRuleError(f"Message {message_id} is not in ticket #{ticket.pk}.")
    with transaction.atomic():
        moved = _move_cursor_forward(ticket, user, message_id)
        if not moved:
            _, created = ReadCursor.objects.get_or_create(
                ticket=ticket, user=user, defaults={"last_read_message_id": message_id}
            )
            # Lost the race to create it? Then the winner's position may be behind ours.
            moved = created or _move_cursor_forward(ticket, user, message_id)
        if moved:
            announce("read", ticket=ticket, user=user, message_id=message_id)
    return bool(moved)


def _move_cursor_forward(ticket, user, message_id):
    return ReadCursor.objects.filter(ticket=ticket, user=user, last_read_message_id__lt=message_id).update(
        last_read_message_id=message_id, updated_at=timezone.now()
    )
