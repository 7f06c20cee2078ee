"""Outbound delivery: one attempt at sending a reply to Telegram, run by the task worker.

Each reply is an outbound ``Message`` queued with a ``deliver_reply`` task (tickets.services.queue_reply,
through the reply_queued hook and bots.outbox, which also decides whose turn it is in each chat). Here one
attempt:

- claims the reply if it is its chat's head and due, taking a lease on it (bots.outbox);
- takes a place within Telegram's overall limit (30 messages/s by default), shared by every worker;
- sends it as what it is: text, or a photo, document, voice, video, audio, animation or sticker by file_id;
- records the outcome. A 429 retries after ``retry_after`` and costs nothing of the retry window; network
  errors, 5xx and a rejected bot token retry with capped exponential backoff for
  ``TELEGRAM_DELIVERY_RETRY_WINDOW_SECONDS`` (hours by default: an outage or a token rotation fails
  nothing); a blocked bot, an unknown chat or a refused message fail at once with a reason an agent
  understands.

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

from tickets.services import CAPTIONLESS_ATTACHMENTS, SENDABLE_ATTACHMENTS

from .application import TOKEN_REJECTED, BotLoop, BotNotReady, get_application
from .flood_limit import reserve_send_slot
from .outbox import claim_delivery, record_failed, record_sent, schedule_delivery_retry

logger = logging.getLogger(__name__)

# The Bot API method that sends each kind of attachment (tickets.services checks replies against these).
SEND_MEDIA = {kind: f"send_{kind}" for kind in SENDABLE_ATTACHMENTS}


def deliver(message_id):
    """One delivery attempt for the reply ``message_id`` (the body of bots.tasks.deliver_reply)."""
    lease = settings.TELEGRAM_DELIVERY_LEASE_SECONDS
    message = claim_delivery(message_id, lease=timedelta(seconds=lease))
    if message is None:
        return  # done, not its turn, not due, or another attempt holds it
    wait = reserve_send_slot()
    if wait > lease / 4:
        _retry(message, wait, "Waiting for a free place within Telegram's overall rate limit.", transient=False)
        return
    time.sleep(wait)  # at most about (threads in all workers) / TELEGRAM_GLOBAL_MESSAGES_PER_SECOND seconds
    chat_id = message.ticket.customer.telegram_user_id
    try:
        # Half the lease: an abandoned call is cancelled well before another attempt may take the reply.
        sent = BotLoop.run(lambda bot: _send(bot, chat_id, message), timeout=lease / 2)
    except RetryAfter as error:
        seconds = _seconds(error.retry_after)
        note = f"Telegram asked to slow down; retrying in {seconds:g} s."
        _retry(message, seconds, note, transient=False, telegram_wait=True)
    except Forbidden:
        record_failed(message, "The customer has blocked the bot, so Telegram refused the message.")
    except BadRequest as error:
        if "chat not found" in error.message.lower():
            reason = "Telegram does not know this chat (chat not found): the customer may have deleted the chat."
        else:
            reason = f"Telegram refused the message: {error.message}"
        record_failed(message, reason)
    except (NetworkError, TimeoutError) as error:
        _retry_transient(message, f"Could not reach Telegram: {error or 'timed out'}.")
    except (BotNotReady, InvalidToken):
        # A configuration problem, not this reply's: retried like a network error until the token is fixed.
        _retry_transient(message, TOKEN_REJECTED)
    except TelegramError as error:
        record_failed(message, f"Telegram refused the message: {error}")
    except Exception as error:
        logger.exception("Reply %s: unexpected error while sending.", message.pk)
        _retry_transient(message, f"Unexpected error while sending ({type(error).__name__}).")
    else:
        record_sent(message, sent.message_id)


async def _send(bot, chat_id, message):
    attachment = message.attachment or {}
    kind = attachment.get("kind")
    if kind in SEND_MEDIA:
        caption = {} if kind in CAPTIONLESS_ATTACHMENTS else {"caption": message.text or None}
        return await getattr(bot, SEND_MEDIA[kind])(chat_id, attachment["file_id"], **caption)
    return await bot.send_message(chat_id, message.text)


def _retry_transient(message, error):
    """Retry after a transient error with capped exponential backoff, until the retry window is over.

    The backoff grows with the time the reply has been failing (each delay about as long as the failures so
    far), so it needs no counter: a run of errors that started at ``delivery_failing_since``.
    """
    now = timezone.now()
    failing_for = (now - (message.delivery_failing_since or now)).total_seconds()
    window = settings.TELEGRAM_DELIVERY_RETRY_WINDOW_SECONDS
    if failing_for >= window:
        record_failed(message, f"Gave up after {_span(failing_for)} of retrying. {error}")
        return
    delay = min(
        max(settings.TELEGRAM_DELIVERY_BACKOFF_SECONDS, failing_for), settings.TELEGRAM_DELIVERY_BACKOFF_CAP_SECONDS
    )
    delay = min(delay * random.uniform(0.5, 1.0), window - failing_for)
    note = f"{error} Retrying for up to {_span(window)}; later replies to this customer wait for this one."
    _retry(message, delay, note, transient=True)


def _retry(message, seconds, error, *, transient, telegram_wait=False):
    logger.info("Reply %s: attempt %s failed (%s)", message.pk, message.delivery_attempts, error)
    due_at = timezone.now() + timedelta(seconds=seconds)
    schedule_delivery_retry(message, due_at, error, transient=transient, telegram_wait=telegram_wait)


def _seconds(retry_after):
    return retry_after.total_seconds() if isinstance(retry_after, timedelta) else float(retry_after)


def _span(seconds):
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


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
