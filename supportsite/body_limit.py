"""Refuse oversized request bodies while they stream in.

daphne accepts bodies of any size and Django's ASGI handler spools the whole body before a view
runs, so a limit checked in the view comes too late. Two layers answer 413 instead: daphne's own
request class, before it buffers the body (install_daphne_request_class), and an ASGI middleware
for any other server (BodySizeLimit). A reverse proxy's limit in front is still good practice.
daphne's request class also leaves form bodies to Django instead of parsing them first.
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


def install_daphne_request_class(max_bytes):
    """Make daphne itself refuse an oversized body as it arrives, before buffering any more of it.

    daphne hands the ASGI app a request only once its whole body has arrived, and then queues all of
    it at once, so BodySizeLimit alone cannot stop a client from filling the server's memory. This
    swaps in a request class that answers 413 and closes the connection as soon as the declared
    length, or the bytes received so far, exceed ``max_bytes`` (as Twisted does with bad requests).

    The class also keeps Twisted from parsing a form body into ``request.args``, which daphne never reads
    (the application gets the raw body): Twisted would do it on the event loop, every socket of the process
    waiting, and answer 400 itself to a multipart body it cannot parse. docs/performance.md has the costs.
    """
    from daphne import http_protocol

    if getattr(http_protocol.WebRequest, "max_body_bytes", None) is not None:
        http_protocol.WebRequest.max_body_bytes = max_bytes
        return

    class SupportsiteWebRequest(http_protocol.WebRequest):
        max_body_bytes = max_bytes
        body_bytes = 0
        refused = False

        def __init__(self, *args, **kwargs):
            super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)

        def gotLength(self, length):
            super().gotLength(length)
            if length is not None and length > self.max_body_bytes:
                self.refuse()

        def handleContentChunk(self, data):
            if self.refused:
                return
            self.body_bytes += len(data)
            if self.body_bytes > self.max_body_bytes:
                self.refuse()
                return
            super().handleContentChunk(data)

        def process(self):
            if not self.refused:
                super().process()

        def refuse(self):
            self.refused = True
            # Twisted would answer "Expect: 100-continue" right after gotLength: there is nothing to continue.
            self.requestHeaders.removeHeader(b"Expect")
            body = f"Request body too large: the limit is {self.max_body_bytes} bytes.\n".encode()
            head = (
                "HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            self.channel.transport.write(head.encode() + body)
            self.channel.loseConnection()

    http_protocol.WebRequest = SupportsiteWebRequest
