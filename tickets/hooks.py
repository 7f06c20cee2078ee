"""The hooks through which tickets hands work to the outside world, without importing it.

tickets imports nothing from bots or realtime; they connect receivers here (in their AppConfig.ready):

- ``announced``, after the transaction that stored them commits: ``events``, the ticket's new
  ``TicketEvent`` rows. realtime broadcasts them (to Redis). Code that stores events on a database thread
  for an async caller wraps that call in ``held_announcements()`` and then awaits ``send_held``, so the
  thread gives its pooled connection back before anything waits on the receivers.
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
import functools
import logging

from asgiref.sync import async_to_sync
from django.db import connection
from django.dispatch import Signal

from .models import TicketEvent

logger = logging.getLogger(__name__)

announced = Signal()
reply_queued = Signal()
customer_forgotten = Signal()
agent_typing = Signal()

# The list collecting announcements inside held_announcements(); None elsewhere.
_held = contextvars.ContextVar("held_announcements", default=None)


def announce(events):
    """Announce ``events``, just committed: to the receivers now, or into the enclosing held_announcements()."""
    held = _held.get()
    if held is None:
        announced.send(sender=TicketEvent, events=events)
    else:
        held.extend(events)


@contextlib.contextmanager
def held_announcements():
    """Collect the events announced within (also on threads started from here) in the list it yields."""
    held = []
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)


async def send_held(events):
    """Announce held ``events`` from async code. They are committed: a receiver's failure is logged, not raised."""
    if not events:
        return
    for receiver, outcome in await announced.asend_robust(sender=TicketEvent, events=events):
        if isinstance(outcome, Exception):
            logger.error("Announcing %d events to %s failed.", len(events), receiver.__qualname__, exc_info=outcome)


def announced_when_done(function):
    """``function`` (sync: a view, an admin view) with the events committed while it runs announced once it
    has returned and its thread's database connection is back in the pool: the receivers wait on the
    network (realtime's broadcast on Redis), and no pooled connection may wait with them (G9)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with held_announcements() as held:
            try:
                return function(*args, **kwargs)
            finally:
                if held:
                    if not connection.in_atomic_block:
                        connection.close()
                    async_to_sync(send_held)(list(held))

    return wrapper
