"""The desk's attachments proxy (SPEC §4): a customer's photo, document, voice or video, fetched from
Telegram by the server and streamed on to an agent's browser.

Telegram's file URL contains the bot token, so it never reaches a browser: the server asks getFile for
the file's path, downloads the file itself and passes the bytes through, refusing files larger than
DESK_ATTACHMENT_MAX_BYTES. The path is kept in the cache (bounded by its expiry and the cache's own size)
for FILE_PATH_SECONDS — Telegram keeps one valid for at least an hour — so showing a photo again costs
no getFile; and the browser keeps the file, which never changes for a message.
"""

import logging
import mimetypes

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET
from telegram.error import BadRequest, TelegramError

from tickets.agents import agent_api
from tickets.models import Message

from .application import get_application

logger = logging.getLogger(__name__)

FILE_PATH_SECONDS = 30 * 60
BROWSER_CACHE_SECONDS = 24 * 60 * 60
DOWNLOAD_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
CHUNK_BYTES = 64 * 1024
# What a kind of file is when Telegram does not say, and the types a browser may show inline.
DEFAULT_TYPES = {
    "photo": "image/jpeg",
    "sticker": "image/webp",
    "voice": "audio/ogg",
    "audio": "audio/mpeg",
    "video": "video/mp4",
    "video_note": "video/mp4",
    "animation": "video/mp4",
}
INLINE_TYPES = {
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "audio/ogg",
    "audio/mpeg",
    "audio/mp4",
    "video/mp4",
    "video/webm",
}
# The file is shown on its own, never as a page of this site: no script, no plugin, no form.
FILE_POLICY = "default-src 'none'; img-src 'self'; media-src 'self'; sandbox"


def refusal(status, message):
    return JsonResponse({"error": message}, status=status)


def megabytes(size):
    return f"{size / (1024 * 1024):.1f} MB"


@agent_api
@require_GET
async def attachment(request, message_id):
    """GET the file attached to the customer's message ``message_id``, for an agent."""
    attached = await Message.objects.filter(pk=message_id).values_list("attachment", flat=True).afirst()
    # Hand the request's database connection back to the pool (on the thread that holds it) before
    # waiting on Telegram and streaming the file (G9): Django would keep it until the response closes.
    await sync_to_async(give_back_connection)()
    if not isinstance(attached, dict) or not attached.get("file_id"):
        return refusal(404, f"Message {message_id} has no file attached.")
    limit = settings.DESK_ATTACHMENT_MAX_BYTES
    if (attached.get("file_size") or 0) > limit:
        return too_large(attached["file_size"], limit)
    try:
        application = await get_application()
        url = f"{application.bot.base_file_url}/{await file_path(application.bot, attached)}"
    except BadRequest as error:
        logger.info("getFile refused the file of message %s: %s", message_id, error.message)
        return refusal(404, "Telegram no longer has this file.")
    except TelegramError as error:
        logger.warning("getFile for message %s failed: %s", message_id, error)
        return refusal(502, "Could not reach Telegram for this file; try again in a moment.")

    client = httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT)
    try:
        upstream = await client.send(client.build_request("GET", url), stream=True)
    except httpx.HTTPError as error:
        await client.aclose()
        logger.warning("Downloading the file of message %s failed: %s", message_id, type(error).__name__)
        return refusal(502, "Could not download this file from Telegram; try again in a moment.")
    size = int(upstream.headers.get("content-length") or 0)
    if upstream.status_code != 200 or size > limit:
        await upstream.aclose()
        await client.aclose()
        if size > limit:
            return too_large(size, limit)
        # The path may have expired: ask getFile again next time.
        await cache.adelete(path_key(attached))
        logger.warning("Telegram answered %s for the file of message %s.", upstream.status_code, message_id)
        return refusal(502, "Telegram did not hand out this file; try again in a moment.")

    content_type = attached.get("mime_type") or DEFAULT_TYPES.get(attached.get("kind")) or "application/octet-stream"
    response = StreamingHttpResponse(relay(upstream, client, limit), content_type=content_type)
    if size:
        response["Content-Length"] = str(size)
    response["Content-Disposition"] = content_disposition_header(
        content_type not in INLINE_TYPES, file_name(attached, message_id, content_type)
    )
    response["Cache-Control"] = f"private, max-age={BROWSER_CACHE_SECONDS}, immutable"
    response["Content-Security-Policy"] = FILE_POLICY
    return response


def give_back_connection():
    connection.close()  # looked up here, on the thread that owns the connection


def too_large(size, limit):
    return refusal(
        413, f"This file is {megabytes(size)}; the desk shows files up to {megabytes(limit)}. Open it in Telegram."
    )


def path_key(attached):
    # file_id, not file_unique_id: a file id (and its path) belongs to one bot.
    return f"telegram:file-path:{attached['file_id']}"


async def file_path(bot, attached):
    """The file's path on Telegram's file server (without the token-bearing prefix), from the cache or getFile."""
    key = path_key(attached)
    path = await cache.aget(key)
    if path is None:
        telegram_file = await bot.get_file(attached["file_id"])
        path = telegram_file.file_path.removeprefix(f"{bot.base_file_url}/")
        await cache.aset(key, path, FILE_PATH_SECONDS)
    return path


async def relay(upstream, client, limit):
    """The file's bytes as they arrive; stops at ``limit`` bytes whatever Content-Length said."""
    sent = 0
    try:
        async for chunk in upstream.aiter_bytes(CHUNK_BYTES):
            sent += len(chunk)
            if sent > limit:
                logger.warning("A Telegram file grew past %s bytes while streaming; cut off.", limit)
                return
            yield chunk
    finally:
        await upstream.aclose()
        await client.aclose()


def file_name(attached, message_id, content_type):
    if attached.get("file_name"):
        return attached["file_name"]
    extension = mimetypes.guess_extension(content_type) or ""
    return f"{attached.get('kind') or 'file'}-{message_id}{extension}"
