"""The Telegram webhook: Telegram POSTs each update here.

Answers 200 only once the update's effects are committed (or it is a duplicate, or a kind we do
not handle); 5xx makes Telegram deliver it again; 4xx tells a caller its request is wrong and will
never be accepted. See SPEC §2 (flow of an inbound update) and §4.
"""

import hmac
import json
import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from telegram import Update
from telegram.error import TelegramError

from .application import get_application
from .handlers import handler_errors

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105  (a header name)


def _refuse(status, reason):
    return HttpResponse(f"{reason}\n", status=status, content_type="text/plain; charset=utf-8")


def _has_valid_secret(request):
    supplied = request.headers.get(SECRET_HEADER, "")
    return hmac.compare_digest(supplied.encode(), settings.TELEGRAM_WEBHOOK_SECRET.encode())


@csrf_exempt
@require_POST
async def telegram_webhook(request):
    if not _has_valid_secret(request):
        return _refuse(403, f"Missing or wrong {SECRET_HEADER} header.")
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return _refuse(400, "The body is not JSON.")
    if not isinstance(data, dict) or type(data.get("update_id")) is not int:
        return _refuse(400, "Not a Telegram update: expected a JSON object with an integer update_id.")

    try:
        application = await get_application()
    except TelegramError as error:
        logger.error("Telegram bot application could not start: %s", error)
        return _refuse(503, "The bot is not ready; deliver the update again later.")
    try:
        update = Update.de_json(data, application.bot)
    except Exception as error:
        logger.info("Refused malformed update %s: %s", data["update_id"], error)
        return _refuse(400, f"Malformed update: {type(error).__name__}.")

    errors = []
    token = handler_errors.set(errors)
    try:
        await application.process_update(update)
    finally:
        handler_errors.reset(token)
    if errors:
        error = errors[0]
        if isinstance(error, (OperationalError, InterfaceError)):
            logger.warning("Update %s not processed, database unavailable: %s", update.update_id, error)
            return _refuse(503, "Database unavailable; deliver the update again later.")
        logger.error("Update %s failed; Telegram will deliver it again.", update.update_id, exc_info=error)
        return _refuse(500, "The update could not be processed; deliver it again later.")
    return JsonResponse({"ok": True})
