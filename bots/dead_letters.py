"""Dead letters: updates Telegram sent that python-telegram-bot could not parse.

Such an update has an integer ``update_id`` and is Telegram's, so refusing it (4xx) would only make
Telegram redeliver it for a day and then drop it. It is kept instead, with its raw body and the error,
logged at ERROR and answered 200; after an upgrade of python-telegram-bot (or of our handlers) it can
be replayed through the same handlers, once: the replay claims its update_id like a delivery would.
"""

import json
import logging

from django.utils import timezone

from . import updates
from .db_executor import run_in_db_thread
from .handlers import UpdateReport, process_update
from .models import DeadLetterUpdate

logger = logging.getLogger(__name__)


def telegram_user_id_in(data):
    """The id of the Telegram user an update is from, if its body names one (for erasure)."""
    for value in data.values():
        if isinstance(value, dict):
            sender = value.get("from") or value.get("user")
            if isinstance(sender, dict) and type(sender.get("id")) is int:
                return sender["id"]
    return None


def describe(error):
    return f"{type(error).__name__}: {error}"


def keep(bot_id, data, raw_body, error):
    """Store the update as a dead letter (once per update, however often it arrives) and log it at ERROR."""
    DeadLetterUpdate.objects.bulk_create(
        [
            DeadLetterUpdate(
                bot_id=bot_id,
                update_id=data["update_id"],
                body=raw_body.decode("utf-8"),
                error=describe(error),
                telegram_user_id=telegram_user_id_in(data),
            )
        ],
        ignore_conflicts=True,
    )
    logger.error(
        "Update %s could not be parsed (%s); kept as a dead letter to replay after an upgrade.",
        data["update_id"],
        describe(error),
    )


def forget_sender(sender, telegram_user_id, **kwargs):
    """Receiver of tickets.hooks.customer_forgotten: the raw updates a forgotten customer sent go too."""
    DeadLetterUpdate.objects.filter(telegram_user_id=telegram_user_id).delete()


def pending(bot_id):
    """The dead letters of ``bot_id`` not replayed yet, oldest first."""
    return DeadLetterUpdate.objects.filter(bot_id=bot_id, replayed_at__isnull=True).order_by("received_at", "pk")


def prune_replayed(older_than):
    """Delete dead letters replayed longer ago than ``older_than``; the others wait for a replay."""
    deleted, _ = DeadLetterUpdate.objects.filter(replayed_at__lt=timezone.now() - older_than).delete()
    return deleted


async def replay(application, dead_letter):
    """Parse and process ``dead_letter`` again; True if it went through (it is then marked replayed)."""
    try:
        update = updates.parse_update(json.loads(dead_letter.body), application.bot)
    except Exception as error:
        await run_in_db_thread(_record_attempt, dead_letter, error=describe(error))
        return False
    report = UpdateReport(update_id=update.update_id)
    await process_update(application.bot.id, update, report)
    if report.error is not None:
        await run_in_db_thread(_record_attempt, dead_letter, error=describe(report.error))
        return False
    await run_in_db_thread(_record_attempt, dead_letter, replayed=True)
    logger.info("Dead letter of update %s replayed: %s.", dead_letter.update_id, report.outcome)
    return True


async def replay_pending(application, ids=None):
    """Replay this bot's pending dead letters (only ``ids`` if given); returns (replayed, still dead)."""
    dead_letters = pending(application.bot.id)
    if ids:
        dead_letters = dead_letters.filter(pk__in=ids)
    replayed = failed = 0
    for dead_letter in await run_in_db_thread(list, dead_letters):
        if await replay(application, dead_letter):
            replayed += 1
        else:
            failed += 1
    return replayed, failed


def _record_attempt(dead_letter, error=None, replayed=False):
    dead_letter.replay_attempts += 1
    if error is not None:
        dead_letter.error = error
    if replayed:
        dead_letter.replayed_at = timezone.now()
    dead_letter.save(update_fields=["replay_attempts", "error", "replayed_at"])
