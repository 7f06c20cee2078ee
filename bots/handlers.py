"""The bot's update handlers: short functions that hand each customer message to tickets.services.

Every handled update runs in ONE database transaction that first claims its ``update_id`` in
``TelegramUpdate`` (Claim, sent in the same round trip as the handler's first statements where it can
be); a redelivered update finds its claim taken and the transaction rolls back with nothing done (G2).
Automatic replies are queued in that same transaction, so they exist exactly when the message does.

``process_update`` picks an update's handler with python-telegram-bot's own filters and command parsing,
without its Application's dispatch (handler groups, a CallbackContext and tasks per update, the error
handler): each update has one handler or none. The transaction runs on the webhook's database threads
(bots.db_executor); what it committed is announced afterwards, from the event loop.
"""

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from telegram import Update
from telegram.ext import CommandHandler, MessageHandler, filters

from tickets import services
from tickets.hooks import held_announcements, send_held
from tickets.models import Ticket
from tickets.services import rows

from .db_executor import run_in_db_thread
from .models import TelegramUpdate
from .updates import attachment_of, profile_of, text_of

logger = logging.getLogger(__name__)

GREETING = (
    "Hello{name}! This is customer support. Write your question here and an agent will answer in this chat.\n"
    "Commands: /new starts a new ticket, /status shows your ticket."
)
TICKET_OPENED = "Thanks for your message! We opened ticket #{number}; an agent will answer here soon."
NEW_TICKET = "Ticket #{number} is open. Write your question and an agent will answer here."
STATUS = "Your ticket #{number} is {status}."
REOPEN_HINT = " Write here if you need more help and it opens again."


@dataclass
class UpdateReport:
    """What the handlers did with one update, for the webhook view (its answer and its log line)."""

    outcome: str = "ignored"
    update_id: int | None = None
    error: Exception | None = None  # why the update's transaction failed (not to be answered 200)


async def process_update(bot_id, update, report):
    """Run ``update``'s handler once per update_id, then announce what it committed; ``report`` says what
    happened (outcome, and the error that must not be answered 200)."""
    handler = handler_for(update)
    if handler is None:
        chat = update.effective_chat
        where = f" in a {chat.type} chat" if chat is not None else ""
        logger.info("Ignored update %s: %s%s is not handled.", update.update_id, update_kind(update), where)
        report.outcome = "ignored"
        return
    # Shielded: a request cancelled meanwhile (the client hung up) still announces what its update committed.
    await asyncio.shield(_process_and_announce(bot_id, update, handler, report))


async def _process_and_announce(bot_id, update, handler, report):
    with held_announcements() as held:
        try:
            report.outcome = await run_in_db_thread(run_once, bot_id, update, handler)
        except Exception as error:  # rolled back: nothing to announce
            report.error = error
            return
    await send_held(held)


def update_kind(update):
    return next((str(kind) for kind in Update.ALL_TYPES if getattr(update, kind, None) is not None), "unknown")


class AlreadyProcessed(Exception):
    """The update's claim is taken: an earlier transaction processed it."""


@dataclass(frozen=True)
class Claim:
    """The claim of an update in TelegramUpdate: its transaction's first statement, sent in the same round trip
    as the handler's own first statements where tickets.services takes it (their ``claim``), else alone
    (``take``).

    INSERT ... ON CONFLICT waits for a concurrent claim of the same id to commit or roll back, so exactly
    one transaction gets the claim; a plain INSERT would need a savepoint to recover. A claim older than the
    retention window is taken over rather than honoured: Telegram redelivers for 24 hours only, and
    numbers updates at random after a week of silence, so such an id is a new update even if housekeeping
    has not pruned the old claim yet.
    """

    bot_id: int
    update_id: int
    kind: str

    def statement(self):
        now = timezone.now()
        stale_before = now - timedelta(days=settings.TELEGRAM_UPDATE_RETENTION_DAYS)
        return (
            f"INSERT INTO {TelegramUpdate._meta.db_table} AS claim (bot_id, update_id, kind, received_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (bot_id, update_id) DO UPDATE SET kind = EXCLUDED.kind, "
            "received_at = EXCLUDED.received_at WHERE claim.received_at < %s",
            [self.bot_id, self.update_id, self.kind, rows.moment(now), rows.moment(stale_before)],
        )

    def check(self, rowcount):
        """Go on if the statement claimed the update; else raise AlreadyProcessed (the transaction rolls back)."""
        if rowcount != 1:
            raise AlreadyProcessed(self.update_id)

    def take(self):
        (rowcount,) = rows.in_turn(self.statement())
        self.check(rowcount)


def prune_update_claims(older_than):
    """Delete claims made longer ago than ``older_than`` (a timedelta); returns how many."""
    deleted, _ = TelegramUpdate.objects.filter(received_at__lt=timezone.now() - older_than).delete()
    return deleted


def run_once(bot_id, update, handler):
    """``handler(update, claim)`` in one transaction that begins with the update's claim (each handler sends
    it first): "processed", or "duplicate" if the update was claimed before, and then nothing is kept."""
    try:
        with transaction.atomic():
            handler(update, Claim(bot_id, update.update_id, update_kind(update)))
    except AlreadyProcessed:
        logger.info("Update %s was already processed; ignoring the redelivery.", update.update_id)
        return "duplicate"
    return "processed"


def _record(update, claim, command=False):
    message = update.effective_message
    return services.record_inbound_message(
        profile_of(message.from_user),
        text=text_of(message),
        attachment=attachment_of(message),
        telegram_message_id=message.message_id,
        reply_to_telegram_message_id=message.reply_to_message.message_id if message.reply_to_message else None,
        command=command,
        claim=claim,
    )


def customer_message(update, claim):
    message, ticket_opened = _record(update, claim)
    if ticket_opened:
        services.queue_reply(message.ticket, TICKET_OPENED.format(number=message.ticket.pk), author=None, locked=True)


def start_command(update, claim):
    message, _ = _record(update, claim, command=True)
    first_name = update.effective_user.first_name
    services.queue_reply(
        message.ticket, GREETING.format(name=f", {first_name}" if first_name else ""), author=None, locked=True
    )


def new_command(update, claim):
    claim.take()
    customer, _ = services.get_or_create_customer(profile_of(update.effective_user))
    services.start_new_ticket(customer)
    message, _ = _record(update, claim=None)
    services.queue_reply(message.ticket, NEW_TICKET.format(number=message.ticket.pk), author=None, locked=True)


def status_command(update, claim):
    message, _ = _record(update, claim, command=True)
    ticket = message.ticket
    status = Ticket.Status(ticket.status).label.lower()
    if ticket.assignee_id and ticket.is_active:
        status += ", and an agent is on it"
    answer = STATUS.format(number=ticket.pk, status=status)
    if ticket.status == Ticket.Status.RESOLVED:
        answer += REOPEN_HINT
    services.queue_reply(ticket, answer, author=None, locked=True)


def edited_message(update, claim):
    claim.take()
    message = update.edited_message
    stored = services.record_message_edit(
        profile_of(message.from_user),
        message.message_id,
        text=text_of(message),
        attachment=attachment_of(message),
        edited_at=message.edit_date,
    )
    if stored is None:
        logger.info(
            "Update %s edits message %s, not stored yet: kept until it is.", update.update_id, message.message_id
        )


_NEW_MESSAGE = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE

# Which handler takes an update: the first of these whose python-telegram-bot check accepts it.
_ROUTES = (
    CommandHandler("start", start_command, filters=_NEW_MESSAGE),
    CommandHandler("new", new_command, filters=_NEW_MESSAGE),
    CommandHandler("status", status_command, filters=_NEW_MESSAGE),
    MessageHandler(_NEW_MESSAGE & ~filters.StatusUpdate.ALL, customer_message),
    MessageHandler(filters.ChatType.PRIVATE & filters.UpdateType.EDITED_MESSAGE, edited_message),
)


def handler_for(update):
    """The handler of ``update``, or None for an update we do not handle."""
    for route in _ROUTES:
        check = route.check_update(update)
        if check is not None and check is not False:  # as Application.process_update reads it
            return route.callback
    return None
