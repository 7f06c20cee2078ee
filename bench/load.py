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

import aiohttp
import uvloop

from .stack import machine_cpu_seconds
from .stats import RequestLog
from .traffic import stream_from

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105  (a header name)


def progress(message):
    print(message, file=sys.stderr, flush=True)


async def post_all(requests, *, targets, concurrency, secret, deadline_s, label):
    """POST each (kind, key, body) of ``requests`` to the ``targets`` URLs (connections spread over them),
    ``concurrency`` at a time; stops at ``deadline_s``. Returns the RequestLog."""
    log = RequestLog()
    queue = iter(requests)
    headers = {"Content-Type": "application/json", SECRET_HEADER: secret}
    deadline = time.monotonic() + deadline_s
    timeout = aiohttp.ClientTimeout(total=60)

    async def worker(url, session):
        for kind, key, body in queue:
            if time.monotonic() > deadline:
                return
            started = time.time()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                status = type(error).__name__
            log.add(kind, status, started, time.time(), key)

    async def report():
        total = len(requests)
        while True:
            await asyncio.sleep(2)
            rate = log.count / log.elapsed if log.elapsed else 0
            progress(f"  {label}: {log.count}/{total} requests, {rate:.0f}/s")

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        reporter = asyncio.create_task(report())
        urls = itertools.cycle(targets)
        await asyncio.gather(*(worker(next(urls), session) for _ in range(concurrency)))
        reporter.cancel()
    return log


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
