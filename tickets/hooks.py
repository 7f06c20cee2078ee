"""The hooks through which tickets hands work to the outside world, without importing it.

tickets imports nothing from bots or realtime; they connect receivers here (in their AppConfig.ready):

- ``announced``, after the transaction that stored them commits: ``events``, the ticket's new
  ``TicketEvent`` rows. realtime broadcasts them. Inside ``held_announcements()`` the events are
  collected instead, for the holder to announce from async code (``announce_held``) once its database
  work is done, so no database thread or pooled connection waits on the receivers.
- ``reply_queued``, inside the transaction that stores an outbound reply: ``message``. bots enqueues its
  delivery there, so the reply and its delivery commit together or not at all.
- ``customer_forgotten``, inside the transaction that forgets a customer (tickets.services.forget_customer):
  ``customer`` (already erased) and the ``telegram_user_id`` they had. An app keeping anything about that
  Telegram user (raw updates, say) erases it there, so the erasure commits whole or not at all.
- ``agent_typing``: an agent is typing in ``ticket`` (``agent``); bots shows "typing…" in the
  customer's Telegram chat (``chat_id``). Sent with ``asend`` from async code; a courtesy that never fails.
"""

import contextlib
import contextvars

from django.dispatch import Signal

from .models import TicketEvent

announced = Signal()
reply_queued = Signal()
customer_forgotten = Signal()
agent_typing = Signal()

# The list collecting committed events inside held_announcements(); None elsewhere.
_held = contextvars.ContextVar("held_announcements", default=None)


def announce(events):
    """Announce committed ``events`` now, or hold them for the enclosing held_announcements()."""
    held = _held.get()
    if held is not None:
        held.extend(events)
    else:
        announced.send(sender=TicketEvent, events=events)


@contextlib.contextmanager
def held_announcements():
    """Collect the events committed within (on threads that run in a copy of this context) in the list it
    yields, instead of announcing them at commit."""
    held = []
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)


async def announce_held(events):
    """Announce held events from async code; a receiver's failure is logged (by Django), never raised."""
    if events:
        await announced.asend_robust(sender=TicketEvent, events=events)
