"""The Telegram webhook: Telegram POSTs each update here.

Answers 200 only once the update's effects are committed (or it is a duplicate, a kind we do not
handle, or kept as a dead letter); 5xx makes Telegram deliver it again; 4xx tells a caller its request
is wrong and will never be accepted. See SPEC §2 (flow of an inbound update) and §4. Every request
leaves one log line with its update_id, outcome and duration.
"""

import hmac
import json
import logging
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from telegram.error import TelegramError

from supportsite.machine_requests import machine_endpoint

from . import dead_letters, updates
from .application import get_application
from .db_executor import run_in_db_thread
from .handlers import UpdateReport, process_update

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105  (a header name)


def _refuse(status, reason):
    return HttpResponse(f"{reason}\n", status=status, content_type="text/plain; charset=utf-8")


def _has_valid_secret(request):
    supplied = request.headers.get(SECRET_HEADER, "")
    return hmac.compare_digest(supplied.encode(), settings.TELEGRAM_WEBHOOK_SECRET.encode())


@machine_endpoint
@csrf_exempt
@require_POST
async def telegram_webhook(request):
    started = time.perf_counter()
    report = UpdateReport(outcome="refused")
    response = await _handle(request, report)
    milliseconds = round((time.perf_counter() - started) * 1000, 1)
    logger.info(
        "webhook update_id=%s outcome=%s status=%s ms=%s",
        report.update_id,
        report.outcome,
        response.status_code,
        milliseconds,
        extra={
            "update_id": report.update_id,
            "outcome": report.outcome,
            "status": response.status_code,
            "ms": milliseconds,
        },
    )
    return response


async def _handle(request, report):
    if not _has_valid_secret(request):
        return _refuse(403, f"Missing or wrong {SECRET_HEADER} header.")
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return _refuse(400, "The body is not JSON.")
    if not isinstance(data, dict) or type(data.get("update_id")) is not int:
        return _refuse(400, "Not a Telegram update: expected a JSON object with an integer update_id.")
    report.update_id = data["update_id"]

    try:
        application = await get_application()
    except TelegramError as error:
        logger.error("Telegram bot application could not start: %s", error)
        report.outcome = "retry"
        return _refuse(503, "The bot is not ready; deliver the update again later.")
    try:
        update = updates.parse_update(data, application.bot)
    except Exception as error:
        # Telegram's update, which this version of python-telegram-bot cannot read: keep it for a replay
        # after an upgrade, and answer 200 so Telegram does not redeliver it for a day and then drop it.
        try:
            await run_in_db_thread(dead_letters.keep, application.bot.id, data, request.body, error)
        except (OperationalError, InterfaceError) as unavailable:
            logger.warning("Update %s not kept, database unavailable: %s", report.update_id, unavailable)
            report.outcome = "retry"
            return _refuse(503, "Database unavailable; deliver the update again later.")
        report.outcome = "dead_letter"
        return JsonResponse({"ok": True})

    await process_update(application.bot.id, update, report)
    error = report.error
    if error is not None:
        report.outcome = "retry"
        if isinstance(error, (OperationalError, InterfaceError)):
            logger.warning("Update %s not processed, database unavailable: %s", update.update_id, error)
            return _refuse(503, "Database unavailable; deliver the update again later.")
        logger.error("Update %s failed; Telegram will deliver it again.", update.update_id, exc_info=error)
        return _refuse(500, "The update could not be processed; deliver it again later.")
    return JsonResponse({"ok": True})
