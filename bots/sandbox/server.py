"""The Telegram sandbox: a Bot-API-compatible fake Telegram server, with a control API and a chat page.

Telegram is unreachable from development and test machines, so the bot talks to this server exactly as to
api.telegram.org (``/bot<token>/<method>``, ``/file/bot<token>/<path>``). Any well-formed token is a bot of its
own. Customers are simulated through the control API (``/sandbox/...``): their messages become updates that are
queued and POSTed to the bot's webhook the way Telegram does it (secret header, ``max_connections`` in flight,
redelivery with exponential backoff until a 2xx). Faults make chosen calls fail (429, 403, 400, 5xx) or hang.

The state is in memory and belongs to the server's event loop; no mutation awaits halfway through, so
concurrent requests never see a half-done change. ``allowed_updates`` is stored and reported, not enforced,
so tests can post any update type.
"""

import asyncio
import functools
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import aiohttp
from aiohttp import web

TOKEN_PATTERN = re.compile(r"(\d+):[^/]+")
SECRET_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")
TYPING_SECONDS = 5
PLACEHOLDER_BYTES = b"Telegram sandbox placeholder file\n"
CHAT_PAGE = Path(__file__).with_name("chat.html")

# Each media kind's default file suffix and the fields Telegram puts in its object beside file_id and size.
MEDIA_KINDS = {
    "photo": (".jpg", {"width": 640, "height": 480}),
    "document": ("", {}),
    "voice": (".oga", {"duration": 1, "mime_type": "audio/ogg"}),
    "video": (".mp4", {"width": 640, "height": 480, "duration": 1, "mime_type": "video/mp4"}),
    "sticker": (".webp", {"type": "regular", "width": 512, "height": 512, "is_animated": False, "is_video": False}),
    "audio": (".mp3", {"duration": 1, "mime_type": "audio/mpeg"}),
    "animation": (".mp4", {"width": 320, "height": 240, "duration": 1, "mime_type": "video/mp4"}),
}
# Telegram's limits on what a bot sends: a message's text, and the caption of a media (stickers have none).
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CAPTIONLESS_KINDS = {"sticker"}
# Form fields that are plain strings; every other form field is JSON-decoded when it parses (ints, objects, …).
TEXT_PARAMS = frozenset(
    {"text", "caption", "parse_mode", "url", "secret_token", "file_id", "action", "emoji", "title", "address"}
    | MEDIA_KINDS.keys()
)
FAULT_DESCRIPTIONS = {
    400: "Bad Request: chat not found",
    403: "Forbidden: bot was blocked by the user",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


class BotApiError(Exception):
    """An unsuccessful Bot API answer, shaped as Telegram shapes it."""

    def __init__(self, error_code, description, retry_after=None):
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after

    def as_json(self):
        body = {"ok": False, "error_code": self.error_code, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


@dataclass(frozen=True)
class Upload:
    """A file uploaded in a multipart Bot API request."""

    filename: str
    content_type: str
    content: bytes


@dataclass
class StoredFile:
    """A file the bot can fetch with getFile and download: uploaded bytes, or placeholder bytes."""

    file_id: str
    file_unique_id: str
    file_path: str
    content: bytes
    file_name: str | None = None
    mime_type: str | None = None

    def as_file(self):
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": len(self.content),
            "file_path": self.file_path,
        }

    def as_media(self, kind):
        """The object Telegram puts in a Message's ``kind`` field (a list of sizes for a photo)."""
        media = {"file_id": self.file_id, "file_unique_id": self.file_unique_id, "file_size": len(self.content)}
        media |= MEDIA_KINDS[kind][1]
        if kind == "document":
            media |= {
                "file_name": self.file_name or "document",
                "mime_type": self.mime_type or "application/octet-stream",
            }
        return [media] if kind == "photo" else media


@dataclass
class Chat:
    """One chat with the bot: its Telegram Chat object, history in both directions and typing state."""

    info: dict
    customer: dict | None = None
    messages: list = field(default_factory=list)
    next_message_id: int = 1
    action_at: float | None = None

    def add(self, sender, fields):
        """Append a new message from ``sender``, numbered after every message of this chat."""
        message = {
            "message_id": self.next_message_id,
            "from": sender,
            "chat": dict(self.info),
            "date": int(time.time()),
            **fields,
        }
        self.next_message_id += 1
        self.messages.append(message)
        return message

    def upsert(self, message):
        """Store a message that came in a raw update: replace the one with its id (an edit), or append it."""
        self.next_message_id = max(self.next_message_id, message.get("message_id", 0) + 1)
        for index, existing in enumerate(self.messages):
            if existing.get("message_id") == message.get("message_id"):
                self.messages[index] = message
                return
        self.messages.append(message)

    def find(self, message_id):
        return next((message for message in self.messages if message.get("message_id") == message_id), None)

    @property
    def typing(self):
        return self.action_at is not None and time.time() - self.action_at < TYPING_SECONDS


@dataclass
class Fault:
    """A planned failure of a bot's method (optionally for one chat) for ``times`` calls, or until cleared."""

    method: str
    error_code: int | None = None
    description: str | None = None
    retry_after: int | None = None
    times: int | None = 1
    delay: float | None = None
    chat_id: int | str | None = None

    def matches(self, method, chat_id):
        return self.method.lower() == method.lower() and (self.chat_id is None or str(self.chat_id) == str(chat_id))

    def as_error(self):
        if self.error_code == 429:
            retry_after = self.retry_after or 1
            return BotApiError(429, self.description or f"Too Many Requests: retry after {retry_after}", retry_after)
        return BotApiError(self.error_code, self.description or FAULT_DESCRIPTIONS.get(self.error_code, "Error"))


@dataclass(eq=False)
class PendingUpdate:
    """An update not yet acknowledged by the webhook with a 2xx, and when it may next be tried."""

    update: dict
    attempts: int = 0
    due: float = 0.0
    in_flight: bool = False


class SandboxBot:
    """One bot (one token): its webhook, pending updates, chats, files, faults and recorded calls."""

    def __init__(self, sandbox, token):
        self.sandbox = sandbox
        self.token = token
        self.id = int(token.split(":", 1)[0])
        self.user = {
            "id": self.id,
            "is_bot": True,
            "first_name": "Support Sandbox",
            "username": f"sandbox_{self.id}_bot",
        }
        self.webhook = {}
        self.last_error_date = None
        self.last_error_message = None
        self.next_update_id = 1
        self.pending: list[PendingUpdate] = []
        self.chats: dict[int | str, Chat] = {}
        self.files: dict[str, StoredFile] = {}
        self.faults: list[Fault] = []
        self.calls = []
        self.deliveries = []
        self.in_flight = set()
        self.wake = asyncio.Event()
        self.dispatcher = asyncio.get_running_loop().create_task(self.dispatch_updates())

    def stop(self):
        """Cancel the dispatcher and the deliveries under way (on reset and shutdown); return those tasks."""
        tasks = [self.dispatcher, *self.in_flight]
        for task in tasks:
            task.cancel()
        return tasks

    # Webhook and updates

    def set_webhook(self, url, secret_token=None, max_connections=40, allowed_updates=None, drop_pending_updates=False):
        if drop_pending_updates:
            self.pending.clear()
        self.webhook = {"url": url, "secret_token": secret_token, "max_connections": max_connections}
        if allowed_updates is not None:
            self.webhook["allowed_updates"] = allowed_updates
        self.wake.set()

    def delete_webhook(self, drop_pending_updates=False):
        if drop_pending_updates:
            self.pending.clear()
        self.webhook = {}

    def webhook_info(self):
        """getWebhookInfo's result: optional fields only when they have a value, as Telegram does."""
        info = {"url": self.webhook.get("url", ""), "has_custom_certificate": False}
        info["pending_update_count"] = len(self.pending)
        if self.last_error_date is not None:
            info |= {"last_error_date": self.last_error_date, "last_error_message": self.last_error_message}
        if self.webhook:
            info["max_connections"] = self.webhook["max_connections"]
        if "allowed_updates" in self.webhook:
            info["allowed_updates"] = self.webhook["allowed_updates"]
        return info

    def queue_update(self, update):
        """Queue an update for the webhook (numbering it if it has no update_id) and remember its chat."""
        if "update_id" not in update:
            update = {"update_id": self.next_update_id, **update}
        self.next_update_id = max(self.next_update_id, update["update_id"] + 1)
        for kind, value in update.items():
            if isinstance(value, dict) and isinstance(value.get("chat"), dict) and "id" in value["chat"]:
                chat = self.chats.setdefault(value["chat"]["id"], Chat(info=value["chat"]))
                if kind in ("message", "edited_message"):
                    chat.upsert(value)
        self.pending.append(PendingUpdate(update))
        self.wake.set()
        return update

    async def dispatch_updates(self):
        """Start deliveries of due pending updates, at most max_connections at once, whenever something changes."""
        loop = asyncio.get_running_loop()
        while True:
            self.wake.clear()
            next_due = None
            for pending in self.pending:
                if not self.webhook or len(self.in_flight) >= self.webhook["max_connections"]:
                    break
                if pending.in_flight:
                    continue
                if pending.due > loop.time():
                    next_due = pending.due if next_due is None else min(next_due, pending.due)
                    continue
                pending.in_flight = True
                task = loop.create_task(self.deliver(pending, self.webhook["url"], self.webhook["secret_token"]))
                self.in_flight.add(task)
                task.add_done_callback(self.delivery_finished)
            try:
                async with asyncio.timeout_at(next_due):
                    await self.wake.wait()
            except TimeoutError:
                pass

    def delivery_finished(self, task):
        self.in_flight.discard(task)
        self.wake.set()

    async def deliver(self, pending, url, secret_token):
        """POST one update to the webhook; on failure keep it pending and schedule its retry with backoff."""
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret_token} if secret_token else {}
        started, status, error = time.time(), None, None
        try:
            timeout = aiohttp.ClientTimeout(total=self.sandbox.webhook_timeout)
            async with self.sandbox.session.post(url, json=pending.update, headers=headers, timeout=timeout) as answer:
                status = answer.status
                await answer.read()
            if not 200 <= status < 300:
                error = f"Wrong response from the webhook: {status} {answer.reason}"
        except TimeoutError:
            error = "Read timeout expired"
        except aiohttp.ClientConnectorError:
            error = "Connection refused"
        except aiohttp.ClientError as exc:
            error = f"Connection error: {exc.__class__.__name__}"
        self.deliveries.append(
            {"update_id": pending.update["update_id"], "url": url, "status": status, "error": error, "time": started}
        )
        pending.in_flight = False
        if error is None:
            if pending in self.pending:
                self.pending.remove(pending)
            return
        self.last_error_date, self.last_error_message = int(time.time()), error
        pending.attempts += 1
        backoff = min(self.sandbox.retry_initial * 2 ** (pending.attempts - 1), self.sandbox.retry_cap)
        pending.due = asyncio.get_running_loop().time() + backoff

    # Customers, chats and files

    def customer_message(self, profile, fields):
        """A message written by a customer in their private chat with the bot, queued as an update."""
        user_id = int(profile.pop("id"))
        chat = self.chats.setdefault(user_id, Chat(info={}))
        if chat.customer is None:
            chat.customer = {"first_name": f"Customer {user_id}", "language_code": "en"}
        chat.customer |= {key: value for key, value in profile.items() if value is not None}
        customer = {"id": user_id, "is_bot": False, **chat.customer}
        names = {key: customer[key] for key in ("first_name", "last_name", "username") if key in customer}
        chat.info = {"id": user_id, "type": "private", **names}
        for kind in MEDIA_KINDS.keys() & fields.keys():
            if not isinstance(fields[kind], dict | list):
                fields[kind] = self.store_file(kind, fields[kind]).as_media(kind)
        command = re.match(r"/\w+(@\w+)?", fields.get("text") or "")
        if command and "entities" not in fields:
            # Telegram marks a leading command, which is how bots (PTB's CommandHandler) recognise it.
            fields["entities"] = [{"type": "bot_command", "offset": 0, "length": command.end()}]
        if isinstance(fields.get("reply_to_message"), int):
            replied = chat.find(fields.pop("reply_to_message"))
            if replied is not None:
                fields["reply_to_message"] = without_reply(replied)
        return self.queue_update({"message": chat.add(customer, fields)})

    def chat_for(self, chat_id):
        """The chat a bot method addresses; Telegram knows only chats where someone wrote to the bot."""
        if isinstance(chat_id, str) and chat_id.lstrip("-").isdigit():
            chat_id = int(chat_id)
        if chat_id is None or chat_id == "":
            raise BotApiError(400, "Bad Request: chat_id is empty")
        if chat_id not in self.chats:
            raise BotApiError(400, "Bad Request: chat not found")
        return self.chats[chat_id]

    def store_file(self, kind, value):
        """The stored file for a file_id (made up with placeholder bytes if unknown) or an Upload."""
        if isinstance(value, str) and value in self.files:
            return self.files[value]
        number = len(self.files) + 1
        upload = value if isinstance(value, Upload) else None
        suffix = PurePosixPath(upload.filename).suffix if upload else ""
        stored = StoredFile(
            file_id=value if isinstance(value, str) else f"sandbox-{self.id}-{kind}-{number}",
            file_unique_id=f"sandbox-unique-{number}",
            file_path=f"{kind}s/file_{number}{suffix or MEDIA_KINDS[kind][0]}",
            content=upload.content if upload else PLACEHOLDER_BYTES,
            file_name=upload.filename if upload else None,
            mime_type=upload.content_type if upload else None,
        )
        self.files[stored.file_id] = stored
        return stored

    def send(self, chat, fields, params):
        """A message from the bot into ``chat``, with the reply and inline keyboard Telegram would show."""
        reply = params.get("reply_parameters") or {}
        reply_to = reply.get("message_id", params.get("reply_to_message_id"))
        if reply_to is not None:
            replied = chat.find(int(reply_to))
            if replied is not None:
                fields["reply_to_message"] = without_reply(replied)
            elif not reply.get("allow_sending_without_reply", params.get("allow_sending_without_reply")):
                raise BotApiError(400, "Bad Request: message to be replied not found")
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            fields["reply_markup"] = markup
        chat.action_at = None
        return chat.add(self.user, fields)

    # Faults

    def take_fault(self, method, chat_id):
        """The first fault planned for this call, used up by one."""
        for fault in self.faults:
            if fault.matches(method, chat_id):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                return fault
        return None


def without_reply(message):
    """A message as Telegram embeds it in a reply: without the message it replied to."""
    return {key: value for key, value in message.items() if key != "reply_to_message"}


# The Bot API methods: name -> function(bot, params) returning the result.
BOT_METHODS = {}


def bot_method(name):
    def register(function):
        BOT_METHODS[name.lower()] = (name, function)
        return function

    return register


@bot_method("getMe")
def get_me(bot, params):
    return bot.user | {"can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}


@bot_method("setWebhook")
def set_webhook(bot, params):
    url = params.get("url") or ""
    if url and not url.startswith(("http://", "https://")):
        raise BotApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
    secret_token = params.get("secret_token") or None
    if secret_token and not SECRET_TOKEN_PATTERN.fullmatch(secret_token):
        raise BotApiError(400, "Bad Request: bad webhook: secret token contains unallowed characters")
    if not url:
        bot.delete_webhook(bool(params.get("drop_pending_updates")))
        return True
    bot.set_webhook(
        url,
        secret_token,
        max_connections=min(max(int(params.get("max_connections") or 40), 1), 100),
        allowed_updates=params.get("allowed_updates"),
        drop_pending_updates=bool(params.get("drop_pending_updates")),
    )
    return True


@bot_method("deleteWebhook")
def delete_webhook(bot, params):
    bot.delete_webhook(bool(params.get("drop_pending_updates")))
    return True


@bot_method("getWebhookInfo")
def get_webhook_info(bot, params):
    return bot.webhook_info()


@bot_method("sendMessage")
def send_message(bot, params):
    chat = bot.chat_for(params.get("chat_id"))
    if not params.get("text"):
        raise BotApiError(400, "Bad Request: message text is empty")
    if len(str(params["text"])) > TEXT_LIMIT:
        raise BotApiError(400, "Bad Request: message is too long")
    return bot.send(chat, {"text": str(params["text"])}, params)


@bot_method("sendChatAction")
def send_chat_action(bot, params):
    bot.chat_for(params.get("chat_id")).action_at = time.time()
    return True


def send_media(bot, params, kind):
    chat = bot.chat_for(params.get("chat_id"))
    if not params.get(kind):
        raise BotApiError(400, f"Bad Request: there is no {kind} in the request")
    caption = "" if kind in CAPTIONLESS_KINDS else str(params.get("caption") or "")  # sendSticker has no caption
    if len(caption) > CAPTION_LIMIT:
        raise BotApiError(400, "Bad Request: message caption is too long")
    fields = {kind: bot.store_file(kind, params[kind]).as_media(kind)}
    if caption:
        fields["caption"] = caption
    return bot.send(chat, fields, params)


for _kind in MEDIA_KINDS:
    bot_method(f"send{_kind.capitalize()}")(functools.partial(send_media, kind=_kind))


@bot_method("sendLocation")
def send_location(bot, params):
    chat = bot.chat_for(params.get("chat_id"))
    location = {"latitude": float(params.get("latitude", 0)), "longitude": float(params.get("longitude", 0))}
    return bot.send(chat, {"location": location}, params)


@bot_method("getFile")
def get_file(bot, params):
    stored = bot.files.get(params.get("file_id"))
    if stored is None:
        raise BotApiError(400, "Bad Request: invalid file_id")
    return stored.as_file()


# Request decoding and the HTTP handlers


def decode_param(name, value):
    """A form or query value as Telegram reads it: JSON (ints, objects, lists) unless it is a text field."""
    if name in TEXT_PARAMS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


async def read_params(request):
    """The call's parameters from the query string and a form, multipart or JSON body."""
    params = {name: decode_param(name, value) for name, value in request.query.items()}
    if request.content_type == "application/json":
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            raise BotApiError(400, "Bad Request: can't parse JSON object") from None
        params.update(body if isinstance(body, dict) else {})
    elif request.can_read_body:
        for name, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                params[name] = Upload(value.filename, value.content_type, value.file.read())
            else:
                params[name] = decode_param(name, value)
    return params


def recorded(params):
    """Parameters as kept in the call log: uploads as their name and size."""
    return {
        name: {"upload": value.filename, "size": len(value.content)} if isinstance(value, Upload) else value
        for name, value in params.items()
    }


async def bot_api(request):
    """``/bot<token>/<method>``: answer like Telegram, unless a fault says otherwise; record the call."""
    token, method = request.match_info["token"], request.match_info["method"]
    if not TOKEN_PATTERN.fullmatch(token):
        return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
    bot = request.app[SANDBOX].bot(token)
    name, function = BOT_METHODS.get(method.lower(), (method, None))
    call = {"token": token, "method": name, "params": {}, "time": time.time(), "status": None}
    try:
        params = await read_params(request)
    except BotApiError as error:
        call["status"] = error.error_code
        bot.calls.append(call)
        return web.json_response(error.as_json(), status=error.error_code)
    # Logged with its parameters (a test may read the log while reading the body awaits), before its answer.
    call["params"] = recorded(params)
    bot.calls.append(call)
    try:
        if function is None:
            raise BotApiError(404, "Not Found: method not found")
        fault = bot.take_fault(name, params.get("chat_id"))
        # A delay without an error answers normally, late: the call takes effect, then the answer is held.
        result = function(bot, params) if fault is None or fault.error_code is None else None
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.error_code is not None:
            raise fault.as_error()
        call["status"] = 200
        return web.json_response({"ok": True, "result": result})
    except BotApiError as error:
        call["status"] = error.error_code
        return web.json_response(error.as_json(), status=error.error_code)


async def download_file(request):
    """``/file/bot<token>/<file_path>``: the bytes of a file getFile described."""
    token = request.match_info["token"]
    bot = request.app[SANDBOX].bot(token) if TOKEN_PATTERN.fullmatch(token) else None
    path = request.match_info["file_path"]
    stored = next((stored for stored in bot.files.values() if stored.file_path == path), None) if bot else None
    if stored is None:
        return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
    return web.Response(body=stored.content, content_type=stored.mime_type or "application/octet-stream")


# The control API, for tests and the chat page.


def control_error(error_class, message):
    return error_class(text=json.dumps({"error": message}), content_type="application/json")


def control_bot(request):
    token = request.match_info["token"]
    if not TOKEN_PATTERN.fullmatch(token):
        raise control_error(web.HTTPNotFound, "not a bot token")
    return request.app[SANDBOX].bot(token)


async def json_body(request):
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise control_error(web.HTTPBadRequest, "expected a JSON object")
    return body


async def post_customer_message(request):
    """A customer writes to the bot: ``{"from": {"id", "first_name", …}, "text": …, other message fields}``."""
    fields = await json_body(request)
    profile = fields.pop("from", None)
    if not isinstance(profile, dict) or not str(profile.get("id", "")).isdigit():
        raise control_error(web.HTTPBadRequest, "from.id (a user id) is required")
    return web.json_response(control_bot(request).customer_message(profile, fields))


async def post_file(request):
    """Store a file a customer is about to send (multipart: ``file``, and ``kind``, e.g. photo); returns it as
    getFile would, so its ``file_id`` can go in a customer's message (``photo=<file_id>``)."""
    bot = control_bot(request)
    form = await request.post()
    upload, kind = form.get("file"), form.get("kind", "document")
    if not isinstance(upload, web.FileField) or kind not in MEDIA_KINDS:
        raise control_error(web.HTTPBadRequest, f"a file and a kind ({', '.join(MEDIA_KINDS)}) are required")
    stored = bot.store_file(kind, Upload(upload.filename, upload.content_type, upload.file.read()))
    return web.json_response(stored.as_file())


async def post_update(request):
    """Queue a raw update as given (numbered if it has no update_id)."""
    return web.json_response(control_bot(request).queue_update(await json_body(request)))


async def list_calls(request):
    method = request.query.get("method", "").lower()
    calls = control_bot(request).calls
    return web.json_response([call for call in calls if not method or call["method"].lower() == method])


async def list_deliveries(request):
    return web.json_response(control_bot(request).deliveries)


async def get_webhook(request):
    return web.json_response(control_bot(request).webhook_info())


async def put_webhook(request):
    """Set the webhook as if the bot had called setWebhook, without recording a call."""
    body = await json_body(request)
    if not body.get("url"):
        raise control_error(web.HTTPBadRequest, "url is required")
    bot = control_bot(request)
    bot.set_webhook(
        body["url"],
        body.get("secret_token"),
        max_connections=body.get("max_connections", 40),
        allowed_updates=body.get("allowed_updates"),
        drop_pending_updates=body.get("drop_pending_updates", False),
    )
    return web.json_response(bot.webhook_info())


async def delete_webhook_control(request):
    bot = control_bot(request)
    bot.delete_webhook(request.query.get("drop_pending_updates") in ("1", "true"))
    return web.json_response(bot.webhook_info())


async def add_fault(request):
    body = await json_body(request)
    try:
        fault = Fault(**body)
    except TypeError as error:
        raise control_error(web.HTTPBadRequest, str(error)) from None
    if fault.error_code is None and not fault.delay:
        raise control_error(web.HTTPBadRequest, "a fault needs error_code or delay")
    control_bot(request).faults.append(fault)
    return web.json_response(vars(fault))


async def list_faults(request):
    return web.json_response([vars(fault) for fault in control_bot(request).faults])


async def clear_faults(request):
    control_bot(request).faults.clear()
    return web.json_response([])


async def get_chat(request):
    """A chat's history in both directions, with what the chat page shows beside it."""
    bot = control_bot(request)
    chat_id = request.match_info["chat_id"]
    chat = bot.chats.get(int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id)
    return web.json_response(
        {
            "bot": bot.user,
            "messages": chat.messages if chat else [],
            "typing": bool(chat and chat.typing),
            "webhook": bot.webhook_info(),
        }
    )


async def reset(request):
    """Forget every bot, chat, call, fault and pending update."""
    request.app[SANDBOX].reset()
    return web.json_response({"ok": True})


async def config(request):
    return web.json_response({"default_token": request.app[SANDBOX].default_token})


async def chat_page(request):
    return web.FileResponse(CHAT_PAGE)


class Sandbox:
    """Every bot of one sandbox server, and how it delivers webhooks."""

    def __init__(self, default_token=None, retry_initial=0.2, retry_cap=2.0, webhook_timeout=10.0):
        self.default_token = default_token
        self.retry_initial = retry_initial
        self.retry_cap = retry_cap
        self.webhook_timeout = webhook_timeout
        self.bots: dict[str, SandboxBot] = {}
        self.session = None

    def bot(self, token):
        if token not in self.bots:
            self.bots[token] = SandboxBot(self, token)
        return self.bots[token]

    def reset(self):
        """Forget every bot; return the delivery tasks it cancelled."""
        tasks = [task for bot in self.bots.values() for task in bot.stop()]
        self.bots.clear()
        return tasks


SANDBOX = web.AppKey("sandbox", Sandbox)


async def webhook_session(app):
    """The HTTP client for webhook deliveries, open while the app serves; deliveries stop on shutdown."""
    sandbox = app[SANDBOX]
    sandbox.session = aiohttp.ClientSession()
    yield
    await asyncio.gather(*sandbox.reset(), return_exceptions=True)
    await sandbox.session.close()


def create_app(default_token=None, retry_initial=0.2, retry_cap=2.0, webhook_timeout=10.0):
    """The sandbox as an aiohttp application; retries wait ``retry_initial`` seconds, doubling up to ``retry_cap``."""
    app = web.Application()
    app[SANDBOX] = Sandbox(default_token, retry_initial, retry_cap, webhook_timeout)
    app.cleanup_ctx.append(webhook_session)
    bot_routes = "/sandbox/{token}"
    app.add_routes(
        [
            web.route("*", "/bot{token}/{method}", bot_api),
            web.get("/file/bot{token}/{file_path:.+}", download_file),
            web.get("/", chat_page),
            web.get("/sandbox/config", config),
            web.post("/sandbox/reset", reset),
            web.post(f"{bot_routes}/messages", post_customer_message),
            web.post(f"{bot_routes}/updates", post_update),
            web.post(f"{bot_routes}/files", post_file),
            web.get(f"{bot_routes}/calls", list_calls),
            web.get(f"{bot_routes}/deliveries", list_deliveries),
            web.get(f"{bot_routes}/webhook", get_webhook),
            web.post(f"{bot_routes}/webhook", put_webhook),
            web.delete(f"{bot_routes}/webhook", delete_webhook_control),
            web.get(f"{bot_routes}/faults", list_faults),
            web.post(f"{bot_routes}/faults", add_fault),
            web.delete(f"{bot_routes}/faults", clear_faults),
            web.get(f"{bot_routes}/chats/{{chat_id}}", get_chat),
        ]
    )
    return app
