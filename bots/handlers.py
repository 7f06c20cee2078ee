"""The bot's update handlers: short functions that hand each customer message to tickets.services.

Every handled update runs in ONE database transaction that first claims its ``update_id`` in
``TelegramUpdate``; a redelivered update finds its claim taken and does nothing (G2). Automatic
replies are queued in that same transaction, so they exist exactly when the message does.
"""

import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from telegram import Update
from telegram.ext import ApplicationHandlerStop, CommandHandler, MessageHandler, TypeHandler, filters

from tickets import services
from tickets.hooks import held_announcements, send_held
from tickets.models import Ticket

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
    errors: list = field(default_factory=list)


# The report of the update the current webhook request (or replay) is processing; see bots.webhook.
update_report: ContextVar[UpdateReport | None] = ContextVar("update_report", default=None)


async def process_reported(application, update, report):
    """Process ``update`` through the handlers, which record in ``report`` what they did and their errors.

    What the handlers stored is broadcast after their database thread has given its connection back, so
    a slow or hung Redis holds no pooled connection (realtime bounds the broadcast's own wait).
    """
    token = update_report.set(report)
    try:
        with held_announcements() as announced:
            try:
                await application.process_update(update)
            finally:
                await send_held(announced)
    finally:
        update_report.reset(token)


def report_outcome(outcome):
    report = update_report.get()
    if report is not None:
        report.outcome = outcome


def update_kind(update):
    return next((str(kind) for kind in Update.ALL_TYPES if getattr(update, kind, None) is not None), "unknown")


def claim_update(bot_id, update_id, kind):
    """Claim the update for this transaction; False if another transaction already processed it.

    INSERT ... ON CONFLICT waits for a concurrent claim of the same id to commit or roll back, so exactly
    one transaction gets True; a plain INSERT would need a savepoint to recover. A claim older than the
    retention window is taken over rather than honoured: Telegram redelivers for 24 hours only, and
    numbers updates at random after a week of silence, so such an id is a new update even if housekeeping
    has not pruned the old claim yet.
    """
    table = TelegramUpdate._meta.db_table
    now = timezone.now()
    stale_before = now - timedelta(days=settings.TELEGRAM_UPDATE_RETENTION_DAYS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} AS claim (bot_id, update_id, kind, received_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (bot_id, update_id) DO UPDATE SET kind = EXCLUDED.kind, received_at = EXCLUDED.received_at "
            "WHERE claim.received_at < %s",
            [bot_id, update_id, kind, now, stale_before],
        )
        return cursor.rowcount == 1


def prune_update_claims(older_than):
    """Delete claims made longer ago than ``older_than`` (a timedelta); returns how many."""
    deleted, _ = TelegramUpdate.objects.filter(received_at__lt=timezone.now() - older_than).delete()
    return deleted


def once_per_update(work):
    """A PTB callback running ``work(update)`` once per update_id, in one transaction with the claim."""

    def run_once(bot_id, update):
        try:
            with transaction.atomic():
                if not claim_update(bot_id, update.update_id, update_kind(update)):
                    logger.info("Update %s was already processed; ignoring the redelivery.", update.update_id)
                    report_outcome("duplicate")
                    return
                work(update)
            report_outcome("processed")
        finally:
            close_old_connections()  # back to the pool now, not when the request ends

    async def callback(update, context):
        await sync_to_async(run_once)(context.bot.id, update)
        raise ApplicationHandlerStop  # handled: skip the catch-all that logs ignored updates

    callback.__name__ = work.__name__
    return callback


def _record(update, command=False):
    message = update.effective_message
    return services.record_inbound_message(
        profile_of(message.from_user),
        text=text_of(message),
        attachment=attachment_of(message),
        telegram_message_id=message.message_id,
        reply_to_telegram_message_id=message.reply_to_message.message_id if message.reply_to_message else None,
        command=command,
    )


@once_per_update
def customer_message(update):
    message, ticket_opened = _record(update)
    if ticket_opened:
        services.queue_reply(message.ticket, TICKET_OPENED.format(number=message.ticket.pk), author=None)


@once_per_update
def start_command(update):
    message, _ = _record(update, command=True)
    first_name = update.effective_user.first_name
    services.queue_reply(message.ticket, GREETING.format(name=f", {first_name}" if first_name else ""), author=None)


@once_per_update
def new_command(update):
    customer = services.get_or_create_customer(profile_of(update.effective_user))
    services.start_new_ticket(customer)
    message, _ = _record(update)
    services.queue_reply(message.ticket, NEW_TICKET.format(number=message.ticket.pk), author=None)


@once_per_update
def status_command(update):
    message, _ = _record(update, command=True)
    ticket = message.ticket
    status = Ticket.Status(ticket.status).label.lower()
    if ticket.assignee_id and ticket.is_active:
        status += ", and an agent is on it"
    answer = STATUS.format(number=ticket.pk, status=status)
    if ticket.status == Ticket.Status.RESOLVED:
        answer += REOPEN_HINT
    services.queue_reply(ticket, answer, author=None)


@once_per_update
def edited_message(update):
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


async def ignored_update(update, context):
    chat = update.effective_chat
    where = f" in a {chat.type} chat" if chat is not None else ""
    logger.info("Ignored update %s: %s%s is not handled.", update.update_id, update_kind(update), where)


async def capture_handler_error(update, context):
    """Hand a handler's exception to the webhook view, which must not answer 200 for it."""
    report = update_report.get()
    if report is None:
        logger.error("Update handler failed outside a webhook request.", exc_info=context.error)
    else:
        report.errors.append(context.error)
    raise ApplicationHandlerStop  # the update was handled, if unsuccessfully: not one to log as ignored


def register_handlers(application):
    private = filters.ChatType.PRIVATE
    new_message = private & filters.UpdateType.MESSAGE
    application.add_handlers(
        [
            CommandHandler("start", start_command, filters=new_message),
            CommandHandler("new", new_command, filters=new_message),
            CommandHandler("status", status_command, filters=new_message),
            MessageHandler(new_message & ~filters.StatusUpdate.ALL, customer_message),
            MessageHandler(private & filters.UpdateType.EDITED_MESSAGE, edited_message),
        ]
    )
    application.add_handler(TypeHandler(Update, ignored_update), group=1)
    application.add_error_handler(capture_handler_error)
