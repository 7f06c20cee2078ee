"""The ticket lifecycle: the only code that changes customers, tickets, messages and read cursors.

Each function validates, writes inside a transaction, and stores what changed as the ticket's next
events (services.history), which are announced through tickets.hooks once the transaction commits, so
nobody hears of a write that rolled back. Race safety comes from the database constraints in
tickets.models and row locks (the customer's, then the ticket's), not from locks in this process. One
module per concern: customers, tickets, customers' messages, replies, the outbox's outcomes, read state,
erasure; callers use the names below.
"""

from .base import TicketRuleError
from .customers import TelegramProfile, get_or_create_customer
from .erasure import FORGET_PERMISSION, forget_customer
from .history import Actor, prune_history
from .messages import record_inbound_message, record_message_edit
from .outbox import mark_delivered, mark_delivery_failed, mark_delivery_retrying, resend_reply
from .read_state import advance_read_cursor
from .replies import (
    CAPTIONLESS_ATTACHMENTS,
    SENDABLE_ATTACHMENTS,
    TELEGRAM_CAPTION_LIMIT,
    TELEGRAM_TEXT_LIMIT,
    queue_reply,
)
from .tickets import ALLOWED_TRANSITIONS, assign_ticket, change_ticket_status, get_or_open_ticket, start_new_ticket

__all__ = [
    "ALLOWED_TRANSITIONS",
    "CAPTIONLESS_ATTACHMENTS",
    "FORGET_PERMISSION",
    "SENDABLE_ATTACHMENTS",
    "TELEGRAM_CAPTION_LIMIT",
    "TELEGRAM_TEXT_LIMIT",
    "Actor",
    "TelegramProfile",
    "TicketRuleError",
    "advance_read_cursor",
    "assign_ticket",
    "change_ticket_status",
    "forget_customer",
    "get_or_create_customer",
    "get_or_open_ticket",
    "mark_delivered",
    "mark_delivery_failed",
    "mark_delivery_retrying",
    "prune_history",
    "queue_reply",
    "record_inbound_message",
    "record_message_edit",
    "resend_reply",
    "start_new_ticket",
]
