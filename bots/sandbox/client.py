"""A small sync client of the sandbox's control API, for tests and scripts.

It plays the customers and the test's eyes: customers write to the bot, faults are planned, and the calls,
webhook deliveries and chats the sandbox recorded are read back. It is sync (httpx); from an async test that
serves something the sandbox must reach on the test's own loop, call it through ``asyncio.to_thread``.
"""

import time

import httpx

# One client for every SandboxClient (it is thread-safe): a new httpx client per call builds an SSL context
# each time, tens of milliseconds of CPU for every poll of a test or script.
_http = httpx.Client()


def wait_until(predicate, timeout=10.0, interval=0.05):
    """Poll ``predicate`` until it returns something truthy, and return that; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"Condition not met within {timeout} s: {predicate}")
        time.sleep(interval)
    return result


class SandboxClient:
    """The control API for one bot token of the sandbox at ``base_url`` (e.g. ``http://127.0.0.1:8081``)."""

    wait_until = staticmethod(wait_until)

    def __init__(self, base_url, token, timeout=10.0):
        self.base_url = base_url
        self.token = token
        self.timeout = timeout

    def _request(self, method, path, **kwargs):
        response = _http.request(method, f"{self.base_url}/sandbox/{path}", timeout=self.timeout, **kwargs)
        response.raise_for_status()
        return response.json()

    def _bot(self, method, path, **kwargs):
        return self._request(method, f"{self.token}/{path}", **kwargs)

    def send_message(
        self, user_id, text=None, *, first_name=None, last_name=None, username=None, language_code=None, **fields
    ):
        """The customer ``user_id`` writes to the bot; returns the queued update.

        ``fields`` are other Message fields: ``photo``/``document``/``voice``/``video``/``sticker`` as a file_id or
        ``True`` (the sandbox makes the media object) or a full object; ``location``, ``contact``, ``caption``;
        ``reply_to_message`` as a message_id of this chat. The profile given is remembered for the next messages.
        """
        profile = {"id": user_id, "first_name": first_name, "last_name": last_name, "username": username}
        profile["language_code"] = language_code
        body = {"from": profile, **fields} | ({"text": text} if text is not None else {})
        return self._bot("POST", "messages", json=body)

    def upload_file(self, kind, content, filename, content_type):
        """Store a file (bytes) for a customer to send; returns its file_id (``send_message(…, photo=file_id)``)."""
        form = {"kind": kind}
        return self._bot("POST", "files", data=form, files={"file": (filename, content, content_type)})["file_id"]

    def post_update(self, update):
        """Queue a raw update for the webhook (an update_id is assigned if missing); returns it."""
        return self._bot("POST", "updates", json=update)

    def calls(self, method=None):
        """The Bot API calls the sandbox answered for this bot, oldest first (``method`` is case-insensitive)."""
        return self._bot("GET", "calls", params={"method": method} if method else None)

    def add_fault(self, method, error_code=None, description=None, retry_after=None, times=1, delay=None, chat_id=None):
        """Make the next ``times`` calls of ``method`` (``times=None``: until cleared) fail or answer late.

        ``error_code`` 429 (with ``retry_after``), 403, 400, 500, 502… answers Telegram's error for it; ``delay``
        alone lets the call take effect and holds its answer ``delay`` seconds; ``chat_id`` limits it to one chat.
        """
        fault = {"method": method, "error_code": error_code, "description": description, "retry_after": retry_after}
        fault |= {"times": times, "delay": delay, "chat_id": chat_id}
        return self._bot("POST", "faults", json=fault)

    def clear_faults(self):
        self._bot("DELETE", "faults")

    def webhook_info(self):
        """What getWebhookInfo would answer, without recording a call."""
        return self._bot("GET", "webhook")

    def set_webhook(self, url, secret=None, max_connections=40, allowed_updates=None, drop_pending_updates=False):
        """Register the webhook as if the bot had called setWebhook, without recording a call."""
        webhook = {"url": url, "secret_token": secret, "max_connections": max_connections}
        webhook |= {"allowed_updates": allowed_updates, "drop_pending_updates": drop_pending_updates}
        return self._bot("POST", "webhook", json=webhook)

    def delete_webhook(self, drop_pending_updates=False):
        return self._bot("DELETE", "webhook", params={"drop_pending_updates": int(drop_pending_updates)})

    def deliveries(self, update_id=None):
        """Every webhook delivery attempt: ``{"update_id", "url", "status", "error", "time"}``, oldest first."""
        attempts = self._bot("GET", "deliveries")
        return [attempt for attempt in attempts if update_id is None or attempt["update_id"] == update_id]

    def chat(self, chat_id):
        """The chat's messages in both directions (Telegram Message objects), oldest first."""
        return self._bot("GET", f"chats/{chat_id}")["messages"]

    def reset(self):
        """Forget every bot, chat, call, fault and pending update of the sandbox (all tokens)."""
        self._request("POST", "reset")
