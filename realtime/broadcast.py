"""Turns the tickets' after-commit announcements into channel-layer group messages."""

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from . import events
from .groups import INBOX, ticket_group

logger = logging.getLogger(__name__)

BROADCAST_TIMEOUT_SECONDS = 2

# The channel-layer message type consumers implement to forward ``event`` to their WebSocket.
CLIENT_EVENT = "client.event"


def events_for(kind, ticket, message=None, user=None, message_id=None):
    """The (groups, event) pairs one announcement becomes."""
    room, inbox = ticket_group(ticket.pk), INBOX
    if kind in ("message.created", "message.edited"):
        return [((room, inbox), events.message_event(message))]
    if kind == "message.delivery":
        return [((room, inbox), events.delivery_event(message))]
    if kind == "ticket.changed":
        return [((room, inbox), events.ticket_event(ticket))]
    if kind == "read":
        return [((room,), events.read_event(user, message_id))]
    raise ValueError(f"Unknown announcement kind {kind!r}")


def broadcast(sender, *, signal, kind, **objects):
    """Receiver of tickets.signals.announced: send each event to its groups."""
    async_to_sync(_send_all)(events_for(kind, **objects))


async def _send_all(pairs):
    layer = get_channel_layer()
    sends = [
        layer.group_send(group, {"type": CLIENT_EVENT, "event": event}) for groups, event in pairs for group in groups
    ]
    try:
        # Bounded: the caller may hold a database connection, and a slow Redis must not exhaust the pool.
        async with asyncio.timeout(BROADCAST_TIMEOUT_SECONDS):
            await asyncio.gather(*sends)
    except TimeoutError:
        logger.warning(
            "Broadcast of %d events timed out after %s s; the change is saved, pages show it on reload.",
            len(sends),
            BROADCAST_TIMEOUT_SECONDS,
        )
