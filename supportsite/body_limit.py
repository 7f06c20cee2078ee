"""Refuse oversized request bodies while they stream in.

daphne accepts bodies of any size and Django's ASGI handler spools the whole body before a view
runs, so a limit checked in the view comes too late. This middleware answers 413 as soon as the
declared Content-Length, or the bytes actually received, exceed the limit.
"""

from django.core.exceptions import RequestDataTooBig


async def _send_413(send, max_bytes):
    body = f"Request body too large: the limit is {max_bytes} bytes.\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    def __init__(self, app, max_bytes):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        try:
            declared = int(declared) if declared is not None else None
        except ValueError:
            declared = None
        if declared is not None and declared > self.max_bytes:
            return await _send_413(send, self.max_bytes)

        received = 0
        response_started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestDataTooBig(f"Request body exceeds {self.max_bytes} bytes.")
            return message

        async def tracking_send(message):
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except RequestDataTooBig:
            if not response_started:
                await _send_413(send, self.max_bytes)
