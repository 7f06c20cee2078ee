"""The ticket lifecycle: the only code that changes customers, tickets, messages and read cursors.

Each function validates, writes inside a transaction, and stores what changed as the ticket's next
events (services.history), which are announced through tickets.hooks once the transaction commits, so
nobody hears of a write that rolled back. Race safety comes from the database constraints in
tickets.models and the ticket's row lock, not from locks in this process. One module per concern:
customers, tickets, messages, the outbox's outcomes, read state; callers use the names below.
"""

from .base import TicketRuleError
from .customers import TelegramProfile, get_or_create_customer
from .history import Actor, prune_history
from .messages import TELEGRAM_TEXT_LIMIT, queue_reply, record_inbound_message, record_message_edit
from .outbox import mark_delivered, mark_delivery_failed
from .read_state import advance_read_cursor
from .tickets import ALLOWED_TRANSITIONS, assign_ticket, change_ticket_status, get_or_open_ticket, start_new_ticket

__all__ = [
    "ALLOWED_TRANSITIONS",
    "TELEGRAM_TEXT_LIMIT",
    "Actor",
    "TelegramProfile",
    "TicketRuleError",
    "advance_read_cursor",
    "assign_ticket",
    "change_ticket_status",
    "get_or_create_customer",
    "get_or_open_ticket",
    "mark_delivered",
    "mark_delivery_failed",
    "prune_history",
    "queue_reply",
    "record_inbound_message",
    "record_message_edit",
    "start_new_ticket",
]
