"""Turns the tickets' committed events into channel-layer group messages.

The receiver is async: announced from async code (tickets.hooks.send_held, after the database thread has
given its connection back) it runs on the event loop; announced from sync code, Django runs it through
async_to_sync. A broadcast that fails (Redis down or hung) is logged and given up: the events are stored,
and a client that missed them catches up with resume (G12).
"""

import asyncio
import logging

from channels.layers import get_channel_layer

from tickets.models import TicketEvent

from . import events
from .groups import INBOX, agent_group, ticket_group
from .layers import LayerUnavailable

logger = logging.getLogger(__name__)

BROADCAST_TIMEOUT_SECONDS = 2

# The channel-layer message type consumers implement to forward ``events`` (a list) to their WebSocket, in order.
CLIENT_EVENTS = "client.events"


def groups_for(event):
    """The groups that hear of a stored event: the ticket's room, and the inbox or the reader's own group."""
    room = ticket_group(event.ticket_id)
    if event.kind == TicketEvent.Kind.READ:
        # Only the reader's own inbox changes (its unread badge); colleagues see it in the room.
        return (room, agent_group(event.actor_id))
    return (room, INBOX)


async def broadcast(sender, *, events, **kwargs):
    """Receiver of tickets.hooks.announced: send each committed event to its groups."""
    await send_events(events)


async def send_to_group(group, wire_events):
    """Send wire events (e.g. typing, which is never stored) to a group's sockets, in order, as one message."""
    await get_channel_layer().group_send(group, {"type": CLIENT_EVENTS, "events": wire_events})


async def send_events(stored_events):
    """Send the events to their groups: the groups at once, one channel-layer message per group (a new
    customer's first message makes three events, which would otherwise cost three sends per group)."""
    by_group = {}
    for event in stored_events:
        wire = events.ticket_event(event)
        for group in groups_for(event):
            by_group.setdefault(group, []).append(wire)
    try:
        # Bounded: a slow Redis must not hold up the request that made the change.
        async with asyncio.timeout(BROADCAST_TIMEOUT_SECONDS):
            await asyncio.gather(*(send_to_group(group, wire_events) for group, wire_events in by_group.items()))
    except TimeoutError:
        failure = f"timed out after {BROADCAST_TIMEOUT_SECONDS} s"
    except LayerUnavailable as error:
        failure = f"failed: {error}"
    else:
        return
    logger.warning(
        "Broadcast of %d events %s; they are stored, and clients catch up with resume.", len(stored_events), failure
    )
