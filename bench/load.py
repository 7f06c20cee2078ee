"""The load generator: a process of its own on loopback, bounded in count and time.

``python -m bench.load <mode> '<json spec>'`` prints progress on stderr and one JSON result on stdout.
Modes: ``webhook`` (POST updates at a fixed concurrency over keep-alive connections) and ``fanout``
(WebSocket clients; see bench.fanout_clients).
"""

import asyncio
import itertools
import json
import sys
import time
import urllib.parse

import uvloop

from .stack import machine_cpu_seconds
from .stats import RequestLog
from .traffic import stream_from

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105  (a header name)
REQUEST_TIMEOUT_S = 60  # a request that hangs is counted as failed instead of holding up the whole run
# What ends one request with its error's name as its status (the connection is opened afresh for the next):
# the connection lost or broken off, an answer that is not HTTP. uvloop raises RuntimeError on writing to a
# transport the peer has reset.
BROKEN_EXCHANGE = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ValueError,
    IndexError,
    RuntimeError,
)


def progress(message):
    print(message, file=sys.stderr, flush=True)


async def post_all(requests, *, targets, concurrency, secret, deadline_s, label):
    """POST each (kind, key, body) of ``requests`` to the ``targets`` URLs (connections spread over them),
    ``concurrency`` at a time; stops at ``deadline_s``. Returns the RequestLog."""
    log = RequestLog()
    queue = iter(requests)
    deadline = time.monotonic() + deadline_s

    async def worker(url):
        connection = KeepAlive(url, {"Content-Type": "application/json", SECRET_HEADER: secret})
        try:
            for kind, key, body in queue:
                if time.monotonic() > deadline:
                    return
                started = time.time()
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_S):
                        status = await connection.post(body)
                except BROKEN_EXCHANGE as error:
                    status = type(error).__name__
                    connection.close()
                log.add(kind, status, started, time.time(), key)
        finally:
            connection.close()

    async def report():
        total = len(requests)
        while True:
            await asyncio.sleep(2)
            rate = log.count / log.elapsed if log.elapsed else 0
            progress(f"  {label}: {log.count}/{total} requests, {rate:.0f}/s")

    reporter = asyncio.create_task(report())
    urls = itertools.cycle(targets)
    await asyncio.gather(*(worker(next(urls)) for _ in range(concurrency)))
    reporter.cancel()
    return log


class KeepAlive:
    """One HTTP/1.1 keep-alive connection to ``url``, POSTing one body at a time and reading the whole answer.

    The load generator shares the two cores with what it measures: this client takes a third less CPU per
    request than aiohttp's did (docs/performance.md, "A slower machine").
    """

    def __init__(self, url, headers):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        if parts.scheme != "http":
            raise ValueError(f"the load generator speaks plain HTTP, not {parts.scheme}: {url}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self.reader = self.writer = None

    async def post(self, body):
        """The response's status code, once its body is read."""
        if self.writer is not None and (self.reader.at_eof() or self.writer.is_closing()):
            self.close()  # the server closed it after its last answer without saying so
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(b"%s%d\r\n\r\n%s" % (self.head, len(body), body))
        status, headers = await self._head()
        while status < 200:  # an interim answer (100 Continue): the final one follows
            status, headers = await self._head()
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            while await self.reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
        elif b"content-length" in headers:
            await self.reader.readexactly(int(headers[b"content-length"]))
        elif status >= 200 and status not in (204, 304):
            await self.reader.read()  # a body that ends with the connection
            headers[b"connection"] = b"close"
        if b"close" in (token.strip() for token in headers.get(b"connection", b"").split(b",")):
            self.close()
        return status

    async def _head(self):
        """The status code and headers (names and values lowercased) of the next answer."""
        status = int((await self.reader.readuntil(b"\r\n")).split(b" ", 2)[1])
        headers = {}
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        return status, headers

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def webhook(spec):
    """``spec["part"]``, if given, is the [start, stop) slice of the stream to send (a round of a longer run)."""
    stream = stream_from(spec["stream"])
    if part := spec.get("part"):
        stream = stream[slice(*part)]
    requests = [(kind, update["update_id"], json.dumps(update).encode()) for kind, update in stream]
    cpu_before = machine_cpu_seconds()
    log = await post_all(
        requests,
        targets=spec["targets"],
        concurrency=spec["concurrency"],
        secret=spec["secret"],
        deadline_s=spec["deadline_s"],
        label=spec["label"],
    )
    # The machine's CPU while the requests ran (every process's), without this process's start.
    machine_cpu_s = round(machine_cpu_seconds() - cpu_before, 3)
    return log.summary(with_log="part" in spec) | {"machine_cpu_s": machine_cpu_s}


def main():
    mode, spec = sys.argv[1], json.loads(sys.argv[2])
    # uvloop keeps the load generator's own share of the two cores small.
    if mode == "webhook":
        result = uvloop.run(webhook(spec))
    elif mode == "fanout":
        from .fanout_clients import fanout

        result = uvloop.run(fanout(spec))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
