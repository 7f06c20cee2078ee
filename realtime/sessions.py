"""Open desk sockets end with the session that opened them.

The consumers check who is connecting once, at connect. An agent who logs out closes the sockets of that
session (4401), and one deleted all of theirs (4401); one deactivated or no longer staff closes all of theirs
(4403). Each socket joins its agent's ``agent_sockets`` group, and these receivers send it ``session.ended``.
"""

import asyncio
import hashlib
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from .broadcast import BROADCAST_TIMEOUT_SECONDS
from .groups import agent_sockets

logger = logging.getLogger(__name__)

# Close codes (SPEC §4).
NOT_AUTHENTICATED = 4401
NOT_STAFF = 4403

SESSION_ENDED = "session.ended"


def session_tag(session_key):
    """A name for the session that does not reveal its key (the key is a credential)."""
    return hashlib.sha256(session_key.encode()).hexdigest()[:32] if session_key else None


def end_sockets(user_id, code, session_key=None):
    """Close the agent's sockets (only those of ``session_key`` if given). Best effort: logging out or
    deactivating an agent never fails because the channel layer is down."""

    async def send():
        async with asyncio.timeout(BROADCAST_TIMEOUT_SECONDS):
            await get_channel_layer().group_send(
                agent_sockets(user_id), {"type": SESSION_ENDED, "code": code, "session": session_tag(session_key)}
            )

    try:
        async_to_sync(send)()
    except Exception:
        logger.warning("Could not close the desk sockets of user %s; they close at their next reconnect.", user_id)


def on_logged_out(sender, request, user, **kwargs):
    if user is not None:
        end_sockets(user.pk, NOT_AUTHENTICATED, request.session.session_key)


def on_user_saved(sender, instance, created, **kwargs):
    if not created and not (instance.is_active and instance.is_staff):
        transaction.on_commit(lambda: end_sockets(instance.pk, NOT_STAFF))


def on_user_deleted(sender, instance, **kwargs):
    user_id = instance.pk  # gone from the instance once the deletion is done
    transaction.on_commit(lambda: end_sockets(user_id, NOT_AUTHENTICATED))
