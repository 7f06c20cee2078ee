"""Customers' messages: storing what they write to the bot, and their edits."""

from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from ..models import Customer, EarlyEdit, Message, Ticket, TicketEvent
from ..snapshots import message_data
from . import rows
from .base import lock_ticket, storable
from .customers import customer_from_row, get_or_create_customer, upsert_statement
from .history import CUSTOMER, record_events
from .tickets import find_or_open_ticket, open_ticket, reopenable_ticket, ticket_changed

# Telegram redelivers an update for up to 24 hours: an edit whose original has not come by then never will.
EARLY_EDIT_RETENTION = timedelta(days=2)


def message_stored(message):
    return TicketEvent.Kind.MESSAGE, {"message": message_data(message)}


def record_inbound_message(
    profile,
    *,
    text,
    telegram_message_id,
    attachment=None,
    reply_to_telegram_message_id=None,
    command=False,
    claim=None,
):
    """Store a customer's message in their active ticket, reopening a recently resolved one or opening one.

    Returns (message, ticket_opened). A customer writing to a pending ticket puts it back to open. A
    ``command`` (/start, /status) is kept in the conversation but moves no ticket: it goes to the active
    ticket, else to the recently resolved one (left resolved), else to a new one; it is never unread
    (tickets.queries). An edit of this message that arrived before it (EarlyEdit) is applied as it is stored.

    ``claim``, if given, is the transaction's first statement, sent in the same round trip as the customer's
    upsert and the lookup of their active ticket: its ``statement()`` gives the (sql, params), and its
    ``check(result)`` is given the result before anything else is done; it raises to stop (the webhook's
    claim of the update, for a redelivery: bots.handlers), and the upsert and the lookup, which have run
    by then, roll back with the caller's transaction.
    """
    text, attachment = storable(text), storable(attachment)
    # No savepoint: nothing here is rolled back alone; an error undoes the caller's whole transaction.
    with transaction.atomic(savepoint=False):
        customer, new_customer, active = _customer_and_active_ticket(profile, telegram_message_id, claim)
        ticket, changes, early_edit = _ticket_and_early_edit(
            customer, new_customer, active, _subject_from(text, attachment), command, telegram_message_id
        )
        if early_edit is not None:
            text = early_edit.text
            attachment = early_edit.attachment if early_edit.attachment is not None else attachment
        message = Message(
            ticket=ticket,
            direction=Message.Direction.IN,
            text=text,
            attachment=attachment,
            is_command=command,
            telegram_message_id=telegram_message_id,
            reply_to_telegram_message_id=reply_to_telegram_message_id,
            edited_at=early_edit.edited_at if early_edit is not None else None,
        )
        rows.insert(message)
        opened = bool(changes)
        updates = {"last_message_at": message.created_at, "updated_at": message.created_at}
        if not command:
            updates |= {"last_notable_message_id": message.pk, "last_notable_author_id": None}
        changes.append(message_stored(message))
        if ticket.status == Ticket.Status.PENDING and not command:
            updates["status"] = Ticket.Status.OPEN.value
        for name, value in updates.items():
            setattr(ticket, name, value)
        if "status" in updates:
            changes.append(ticket_changed(ticket, status=[Ticket.Status.PENDING.value, ticket.status]))
        record_events(ticket, CUSTOMER, *changes, ticket_fields=updates, locked=True)
        message.ticket = ticket
    return message, opened


def _ticket_and_early_edit(customer, new_customer, active, subject, command, telegram_message_id):
    """The ticket the message goes to, the changes opening it made (to record with the message's), and the
    edit of the message that arrived before it, if one did (taken). ``active`` is the customer's active
    ticket, locked, as _customer_and_active_ticket found it, saying whether an early edit is waiting."""
    if active is not None:
        early_edit = _take_early_edit(customer, telegram_message_id) if active.early_edit_waiting else None
        return active, [], early_edit
    if new_customer:  # no tickets yet, and nothing of theirs was edited early
        ticket, changes = open_ticket(customer, subject)
        return ticket, changes, None
    changes = []
    # A command goes to the recently resolved ticket, leaving it resolved; a message reopens it.
    ticket = reopenable_ticket(customer, lock=True) if command else None
    if ticket is None:
        ticket, changes = find_or_open_ticket(customer, subject, reopen=not command)
    return ticket, changes, _take_early_edit(customer, telegram_message_id)


# Every customer's message reads its active ticket so, in SQL (tickets.services.rows), right after the upsert
# that locks the customer's row: run after it, it sees any early edit committed before (an edit locks the
# customer before keeping one) and any ticket opened by a message that held the lock before.
_ACTIVE_TICKET = (
    "SELECT {columns}, EXISTS (SELECT 1 FROM "
    f"{EarlyEdit._meta.db_table} AS edit WHERE edit.telegram_user_id = %s AND edit.telegram_message_id = %s) "
    f"FROM {Ticket._meta.db_table} AS ticket WHERE ticket.customer_id = "
    f"(SELECT id FROM {Customer._meta.db_table} WHERE telegram_user_id = %s) AND ticket.status IN (%s, %s) LIMIT 1"
)


def _customer_and_active_ticket(profile, telegram_message_id, claim=None):
    """get_or_create_customer, and the customer's active ticket locked as active_ticket(lock=True) would
    (None if there is none), which also says whether an edit of the message came first: two statements,
    one round trip (rows.in_turn), after ``claim``'s if given. Returns (customer, created, ticket)."""
    lookup = _ACTIVE_TICKET.format(columns=rows.columns(Ticket, "ticket"))
    if connection.features.has_select_for_update:
        lookup += " FOR NO KEY UPDATE"
    user_id = profile.user_id
    statements = [upsert_statement(profile), (lookup, [user_id, telegram_message_id, user_id, *Ticket.ACTIVE_STATUSES])]
    if claim is not None:
        statements.insert(0, claim.statement())
    results = rows.in_turn(*statements)
    if claim is not None:
        claim.check(results.pop(0))
    (customer_row,), tickets = results
    customer, created = customer_from_row(customer_row)
    if not tickets:
        return customer, created, None
    *values, early_edit_waiting = tickets[0]
    ticket = rows.load(Ticket, values)
    ticket.early_edit_waiting = bool(early_edit_waiting)
    ticket.customer = customer
    return customer, created, ticket


def _subject_from(text, attachment):
    if text:
        return " ".join(text.split())[:80]
    if attachment:
        return f"[{attachment.get('kind', 'attachment')}]"
    return ""


def record_message_edit(profile, telegram_message_id, *, text, edited_at, attachment=None):
    """Apply a customer's edit to the message they sent; returns it, or None if it is not stored (yet).

    An edit can arrive before its original (the original was answered 5xx and Telegram delivers it again
    later): it is kept as an EarlyEdit and applied when the original is stored. The customer's lock orders
    this edit and the original's transaction, so one of the two always sees the other. An edit older than
    the one already applied changes nothing.
    """
    text, attachment = storable(text), storable(attachment)
    with transaction.atomic():
        customer, _ = get_or_create_customer(profile)
        message = (
            Message.objects.filter(
                direction=Message.Direction.IN, telegram_message_id=telegram_message_id, ticket__customer=customer
            )
            .order_by("-id")
            .first()
        )
        if message is None:
            _keep_early_edit(profile.user_id, telegram_message_id, text, attachment, edited_at)
            return None
        # The ticket's lock orders this edit's event among the ticket's others, and the message's with it.
        ticket = lock_ticket(message.ticket_id)
        message = (
            Message.objects.select_for_update(of=("self",), no_key=True).select_related("author").get(pk=message.pk)
        )
        if message.edited_at is not None and edited_at < message.edited_at:
            return message
        message.text = text
        if attachment is not None:
            message.attachment = attachment
        message.edited_at = edited_at
        message.save(update_fields=["text", "attachment", "edited_at"])
        record_events(ticket, CUSTOMER, (TicketEvent.Kind.EDIT, {"message": message_data(message)}))
        message.ticket = ticket
    return message


def _keep_early_edit(telegram_user_id, telegram_message_id, text, attachment, edited_at):
    EarlyEdit.objects.filter(received_at__lt=timezone.now() - EARLY_EDIT_RETENTION).delete()
    kept = EarlyEdit.objects.filter(telegram_user_id=telegram_user_id, telegram_message_id=telegram_message_id)
    latest = {"text": text, "attachment": attachment, "edited_at": edited_at}
    if not kept.filter(edited_at__gt=edited_at).exists() and not kept.update(**latest):
        EarlyEdit.objects.create(telegram_user_id=telegram_user_id, telegram_message_id=telegram_message_id, **latest)


def _take_early_edit(customer, telegram_message_id):
    early_edit = EarlyEdit.objects.filter(
        telegram_user_id=customer.telegram_user_id, telegram_message_id=telegram_message_id
    ).first()
    if early_edit is not None:
        early_edit.delete()
    return early_edit
