"""Outbound delivery: sending agents' (and the bot's) replies to Telegram, run by the task worker.

Each reply is an outbound ``Message`` with ``delivery_status="queued"`` and a ``deliver_reply`` task
committed together (tickets.services.queue_reply, through the reply_queued hook and bots.outbox). Here one attempt:

- skips the reply unless it is still queued and due, and takes a lease on it (so two tasks for the
  same reply never send it twice at once, and the outbox sweep re-drives it if this worker dies);
- respects Telegram's limits (about 1 message/s per chat, 30/s overall) by postponing the reply,
  never by sleeping, so one busy chat does not hold up the others;
- sends it; 429 retries after ``retry_after``; network errors and 5xx retry with exponential
  backoff and jitter, up to ``TELEGRAM_DELIVERY_MAX_ATTEMPTS``; a blocked bot or an unknown chat
  fails at once with a reason an agent understands.

Delivery is at-least-once. The customer receives a reply twice if Telegram accepted it but this
attempt never learnt so: the worker died before ``sent`` was committed (the sweep re-drives the
reply once its lease expires), or the answer did not come back in time (a timeout is retried like
any network error). The window is one Bot API round trip plus one UPDATE.
"""

import logging
import random
import time
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError

from tickets import services
from tickets.models import Message

from .application import BotLoop, BotNotReady, get_application
from .outbox import claim_delivery, postpone_delivery, schedule_delivery_retry

logger = logging.getLogger(__name__)

SEND_MEDIA = {
    "photo": "send_photo",
    "document": "send_document",
    "voice": "send_voice",
    "video": "send_video",
}


def deliver(message_id):
    """One delivery attempt for the reply ``message_id`` (the body of bots.tasks.deliver_reply)."""
    now = timezone.now()
    message = Message.objects.select_related("ticket__customer").filter(pk=message_id).first()
    if message is None or message.delivery_status != Message.DeliveryStatus.QUEUED:
        return  # sent or failed already
    if message.delivery_due_at and message.delivery_due_at > now:
        return  # another attempt holds it, or it is scheduled later (by a task of its own)
    chat_id = message.ticket.customer.telegram_user_id
    wait = seconds_until_send_allowed(chat_id)
    if wait:
        postpone_delivery(message, now + timedelta(seconds=wait))
        return
    lease = settings.TELEGRAM_DELIVERY_LEASE_SECONDS
    message = claim_delivery(message_id, lease=timedelta(seconds=lease))
    if message is None:
        return  # another task claimed it first

    try:
        # Half the lease: an abandoned call is cancelled well before another attempt may take the reply.
        sent = BotLoop.run(lambda bot: _send(bot, chat_id, message), timeout=lease / 2)
    except RetryAfter as error:
        seconds = _seconds(error.retry_after)
        _retry(message, seconds, f"Telegram asked to slow down; retrying in {seconds:g} s.")
    except Forbidden:
        _fail(message, "The customer has blocked the bot, so Telegram refused the message.")
    except BadRequest as error:
        if "chat not found" in error.message.lower():
            reason = "Telegram does not know this chat (chat not found): the customer may have deleted the chat."
        else:
            reason = f"Telegram refused the message: {error.message}"
        _fail(message, reason)
    except (NetworkError, TimeoutError) as error:
        _retry_transient(message, f"Could not reach Telegram: {error or 'timed out'}")
    except (BotNotReady, InvalidToken) as error:
        # A configuration problem, not this reply's: retried with backoff like a network error.
        _retry_transient(message, str(error))
    except TelegramError as error:
        _fail(message, f"Telegram refused the message: {error}")
    except Exception as error:
        logger.exception("Reply %s: unexpected error while sending.", message.pk)
        _retry_transient(message, f"Unexpected error while sending ({type(error).__name__}).")
    else:
        services.mark_delivered(message, sent.message_id, lease_until=message.delivery_due_at)


async def _send(bot, chat_id, message):
    attachment = message.attachment or {}
    method = SEND_MEDIA.get(attachment.get("kind"))
    if method and attachment.get("file_id"):
        return await getattr(bot, method)(chat_id, attachment["file_id"], caption=message.text or None)
    return await bot.send_message(chat_id, message.text)


def _fail(message, reason):
    services.mark_delivery_failed(message, reason, lease_until=message.delivery_due_at)


def _retry_transient(message, error):
    if message.delivery_attempts >= settings.TELEGRAM_DELIVERY_MAX_ATTEMPTS:
        _fail(message, f"Gave up after {message.delivery_attempts} attempts. {error}")
        return
    base = settings.TELEGRAM_DELIVERY_BACKOFF_SECONDS
    delay = min(base * 2 ** (message.delivery_attempts - 1), settings.TELEGRAM_DELIVERY_BACKOFF_CAP_SECONDS)
    _retry(message, delay * random.uniform(0.5, 1.0), error)


def _retry(message, seconds, error):
    logger.info("Reply %s: attempt %s failed (%s)", message.pk, message.delivery_attempts, error)
    schedule_delivery_retry(message, timezone.now() + timedelta(seconds=seconds), error)


def _seconds(retry_after):
    return retry_after.total_seconds() if isinstance(retry_after, timedelta) else float(retry_after)


def seconds_until_send_allowed(chat_id):
    """0 if a message may go to ``chat_id`` now, else how long to wait (Telegram's flood limits).

    The counters live in the cache (Redis in production), so every worker shares them.
    """
    if not cache.add(f"telegram:chat-slot:{chat_id}", 1, timeout=1):
        return 1.0
    now = time.time()
    second = f"telegram:sent-in:{int(now)}"
    cache.add(second, 0, timeout=5)
    if cache.incr(second) > settings.TELEGRAM_GLOBAL_MESSAGES_PER_SECOND:
        cache.delete(f"telegram:chat-slot:{chat_id}")
        return 1.0 - (now - int(now)) + random.uniform(0, 0.5)
    return 0


async def show_agent_typing(sender, chat_id, **kwargs):
    """Receiver of tickets.hooks.agent_typing."""
    return await show_customer_typing(chat_id)


async def show_customer_typing(chat_id):
    """Show "typing…" in the customer's chat while an agent types: at most once per ~4 s per chat,
    across all processes (an atomic cache.add). Failures are logged, never raised at the agent."""
    if not await cache.aadd(f"telegram:typing:{chat_id}", 1, timeout=4):
        return False
    try:
        application = await get_application()
        await application.bot.send_chat_action(chat_id, ChatAction.TYPING)
    except Exception as error:  # a courtesy to the customer: never an error for the agent
        logger.warning("Could not show typing in chat %s: %s", chat_id, error)
        return False
    return True
