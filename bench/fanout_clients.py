"""The fan-out's clients, run inside the load generator process (``python -m bench.load fanout``).

WebSocket clients spread over the servers note when each event reaches them. Two sources of events:

- ``relay``: the bench sends events straight to the bare relay's group with ``group_send`` (the baseline);
- ``ours``: a customer's message arrives by webhook and the product's consumers at ``/ws/tickets/<id>/``
  forward the broadcast; its start is read from the bench's broadcast log (bench.apps).

Then one sender offers typing events at a steady rate (ours: from a second agent's socket, since nobody hears
their own typing), and each receiver counts what it got.
"""

import asyncio
import json
import time

import aiohttp

from .stats import last_receiver_latencies, summarize
from .traffic import customer_update

MARK = "bench-fanout-"


class Receiver:
    def __init__(self, socket):
        self.socket = socket
        self.arrivals = {}  # event key -> time
        self.typing = 0
        self.resumed = asyncio.Event()
        self.task = asyncio.create_task(self.read())

    async def read(self):
        async for frame in self.socket:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            now = time.time()
            event = json.loads(frame.data)
            if event.get("type") == "typing":
                self.typing += 1
            elif event.get("type") == "resumed":
                self.resumed.set()
            elif (key := event_key(event)) is not None:
                self.arrivals[key] = now
        self.resumed.set()  # closed: nothing more to wait for


def event_key(event):
    """Which measured event this is: the relay's ``n``, or the marker in a message's text (with its seq)."""
    if event.get("type") == "bench":
        return event["n"]
    if event.get("type") == "message":
        text = event.get("message", {}).get("text", "")
        if text.startswith(MARK):
            return (int(text[len(MARK) :]), event.get("seq"))
    return None


async def connect_all(session, urls, count, headers):
    async def connect(number):
        socket = await session.ws_connect(urls[number % len(urls)], headers=headers, heartbeat=None)
        return Receiver(socket)

    receivers = []
    for start in range(0, count, 50):  # in batches, as a desk's agents would not all connect in one instant
        receivers += await asyncio.gather(*(connect(number) for number in range(start, min(start + 50, count))))
    return receivers


async def paced(count, rate, send):
    """Start ``send(number)`` ``rate`` times a second, without waiting for one to finish (a POST takes longer
    than the interval); returns once all have finished."""
    started = time.monotonic()
    sends = []
    for number in range(count):
        await asyncio.sleep(max(0.0, started + number / rate - time.monotonic()))
        sends.append(asyncio.create_task(send(number)))
    await asyncio.gather(*sends)


async def settle(receivers, expected, key_count, timeout=5.0):
    """Wait until every receiver has ``expected`` events (by ``key_count``), or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(key_count(receiver) < expected for receiver in receivers):
        await asyncio.sleep(0.05)


def channel_layer():
    import django

    django.setup()
    from channels.layers import get_channel_layer

    return get_channel_layer()


async def relay_events(spec, receivers):
    from .relay import RELAY_GROUP, RELAY_MESSAGE_TYPE

    layer = channel_layer()
    sent_at = {}

    async def send(number):
        sent_at[number] = time.time()
        event = {"type": "bench", "n": number, "sent_at": sent_at[number]}
        await layer.group_send(RELAY_GROUP, {"type": RELAY_MESSAGE_TYPE, "event": event})

    await paced(spec["events"], spec["rate"], send)
    await settle(receivers, spec["events"], lambda receiver: len(receiver.arrivals))
    latencies, missed = last_receiver_latencies(sent_at, [receiver.arrivals for receiver in receivers])
    result = {"broadcast_to_last_receiver": summarize(latencies), "events_missed_by_some": missed}

    async def send_typing(number):
        await layer.group_send(RELAY_GROUP, {"type": RELAY_MESSAGE_TYPE, "event": {"type": "typing"}})

    return result, send_typing


async def position(receivers, after):
    """Tell each ticket socket where its client is (``resume``), as a desk page does on connecting: the
    socket forwards live events only from then on. Returns a reason if a socket was closed instead."""
    for receiver in receivers:
        await receiver.socket.send_str(json.dumps({"type": "resume", "after": after}))
    async with asyncio.timeout(30):
        await asyncio.gather(*(receiver.resumed.wait() for receiver in receivers))
    closed = [receiver.socket.close_code for receiver in receivers if receiver.socket.closed]
    return f"sockets closed with codes {sorted(set(closed))}" if closed else None


async def our_events(spec, session, receivers):
    import redis.asyncio as redis

    log = redis.Redis.from_url(spec["redis_url"])
    posted_at = {}
    headers = {"X-Telegram-Bot-Api-Secret-Token": spec["secret"]}

    async def send(number):
        update = customer_update(
            spec["first_update_id"] + number, spec["customer_id"], 1000 + number, f"{MARK}{number}"
        )
        posted_at[number] = time.time()
        async with session.post(spec["webhook_url"], json=update, headers=headers) as response:
            response.raise_for_status()

    await paced(spec["events"], spec["rate"], send)
    await settle(receivers, spec["events"], lambda receiver: len(receiver.arrivals))
    broadcast_at = {}
    for entry in await log.lrange(spec["broadcast_log"], 0, -1):
        ticket_id, seq, moment = entry.decode().split()
        if int(ticket_id) == spec["ticket_id"]:
            broadcast_at[int(seq)] = float(moment)
    await log.aclose()
    keys = {key for receiver in receivers for key in receiver.arrivals}
    from_broadcast = {key: broadcast_at[key[1]] for key in keys if key[1] in broadcast_at}
    from_post = {key: posted_at[key[0]] for key in keys}
    arrivals = [receiver.arrivals for receiver in receivers]
    latencies, missed = last_receiver_latencies(from_broadcast, arrivals)
    post_latencies, _ = last_receiver_latencies(from_post, arrivals)
    result = {
        "broadcast_to_last_receiver": summarize(latencies),
        "post_to_last_receiver": summarize(post_latencies),
        "events_missed_by_some": missed + spec["events"] - len(keys),
    }
    typist = await session.ws_connect(spec["urls"][0], headers=spec["typist_headers"], heartbeat=None)

    async def send_typing(number):
        await typist.send_str(json.dumps({"type": "typing", "state": "start"}))

    return result, send_typing


async def typing(receivers, send_typing, rate, seconds):
    """Typing events offered at ``rate`` a second for ``seconds``: how many a second each receiver got (counted
    until a second after the last was sent). A receiver that keeps up gets ``rate``."""
    before = [receiver.typing for receiver in receivers]
    await paced(round(rate * seconds), rate, send_typing)
    await asyncio.sleep(1.0)  # the last ones in flight
    got = sorted(receiver.typing - count for receiver, count in zip(receivers, before, strict=True))
    return {
        "offered_per_second": rate,
        "received_per_second_median": round(got[len(got) // 2] / seconds, 1),
        "received_per_second_slowest": round(got[0] / seconds, 1),
    }


async def fanout(spec):
    headers = spec.get("headers") or {}
    # No connection limit (aiohttp's default of 100 would hold the 101st socket back), a bounded handshake.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        try:
            receivers = await connect_all(session, spec["urls"], spec["clients"], headers)
        except aiohttp.WSServerHandshakeError as error:
            return {"available": False, "reason": f"WebSocket handshake refused: {error.status} {error.message}"}
        if spec["side"] == "relay":
            result, send_typing = await relay_events(spec, receivers)
        else:
            if refused := await position(receivers, spec["resume_after"]):
                return {"available": False, "reason": refused}
            result, send_typing = await our_events(spec, session, receivers)
        result["typing"] = await typing(receivers, send_typing, spec["typing_rate"], spec["typing_seconds"])
        for receiver in receivers:
            await receiver.socket.close()
        result["available"] = True
        result["clients"] = len(receivers)
        result["events_sent"] = spec["events"]
        return result
