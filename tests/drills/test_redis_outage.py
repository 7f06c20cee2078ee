"""Drill: Redis stops while customers write, and comes back.

Redis carries only what is live (broadcasts to the desk, the readiness report), so the webhook goes on
storing every update and answering 200, the failed broadcasts logged; /readyz says 503 until Redis is back;
a desk socket the outage closed reconnects, and its resume replays exactly what it missed.
"""

from collections import Counter

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError, InvalidHandshake

from realtime.consumers import LAYER_UNAVAILABLE
from tests.conftest import wait_until
from tests.realtime.live import live_socket, log_in

from .conftest import AGENT, AGENT_PASSWORD, CustomerStream

pytestmark = pytest.mark.drill

CUSTOMERS = [31_001, 31_002, 31_003]
WATCHED = CUSTOMERS[0]  # the customer whose ticket an agent has open


def readiness(server):
    """/readyz's status code and each check's status."""
    response = httpx.get(f"{server.url}/readyz", timeout=30)
    return response.status_code, {check["name"]: check["status"] for check in response.json()["checks"]}


def is_customer_message(event):
    return event["type"] == "message" and event["message"]["direction"] == "in"


def test_redis_stopped_mid_stream_loses_no_update_and_resume_fills_the_desk_gap(drill):
    redis = drill.services.redis
    server = drill.start_server()
    cookie = log_in(server.url, AGENT, AGENT_PASSWORD)
    drill.bot.send_message(WATCHED, "hello")
    ticket_id, _ = drill.services.ticket_of(WATCHED)
    room = f"/ws/tickets/{ticket_id}/"

    with CustomerStream(drill.bot, CUSTOMERS) as stream, live_socket(server.url, cookie, room) as before:
        before.resume(0)
        stream.wait_for_acknowledged(9, "updates before the outage")
        before.receive_until(lambda event: event["type"] == "message" and event["message"]["text"] != "hello")

        redis.stop()
        outage_from = stream.acknowledged()
        # The socket can no longer hear its room: the server closes it, so the client knows to reconnect.
        with pytest.raises(ConnectionClosedError) as closed:
            while True:
                before.receive()
        stream.wait_for_acknowledged(outage_from + 15, "updates while Redis is down")
        status, checks = readiness(server)
        with pytest.raises(InvalidHandshake), live_socket(server.url, cookie, room):
            pass  # a socket that could not subscribe to its room is refused, not left deaf

        redis.start()
        wait_until(lambda: readiness(server)[0] == 200, message="/readyz to answer 200 with Redis back")
        with live_socket(server.url, cookie, room) as after:
            replayed = after.resume(before.seqs()[-1])
            stream.wait_for_acknowledged(stream.acknowledged() + 9, "updates with Redis back")
            sent = stream.finish()
            _, last_seq = drill.services.ticket_of(WATCHED)
            while not after.seqs() or after.seqs()[-1] < last_seq:
                after.receive()

    assert closed.value.rcvd.code == LAYER_UNAVAILABLE
    assert "Exception inside application" not in server.log()
    assert status == 503 and checks["channel_layer"] == "fail" and checks["database"] == "ok"
    # Every update stored once, each acknowledged with a 200 at its first delivery.
    written = [(WATCHED, "hello"), *sent]
    assert Counter(drill.services.inbound(CUSTOMERS)) == Counter(written)
    deliveries = drill.bot.deliveries()
    assert [(attempt["status"], attempt["error"]) for attempt in deliveries] == [(200, None)] * len(written)
    # The agent received each event of the ticket once, in order: live, then replayed after the gap, then live.
    assert before.seqs() + after.seqs() == list(range(1, last_seq + 1))
    assert replayed and replayed[0]["seq"] == before.seqs()[-1] + 1
    received = [event["message"]["text"] for event in before.received + after.received if is_customer_message(event)]
    assert Counter(received) == Counter(text for user_id, text in written if user_id == WATCHED)
    assert "Broadcast of" in server.log()


HUNG_CUSTOMERS = [32_001, 32_002, 32_003, 32_004]
POOL_MAX = 2


def test_a_hung_redis_holds_neither_the_webhook_nor_its_database_connections(drill, black_hole_port):
    """Redis accepts connections and never answers: each broadcast gives up after its bound, and meanwhile the
    update's request holds no pooled connection, so twenty updates at once through a pool of two are all
    stored at their first delivery (had each kept its connection while it waited on Redis, most would have
    waited past the pool's timeout and answered 503, or past Telegram's and been redelivered)."""
    # A generous pool timeout: on a busy machine twenty short transactions through two connections take a
    # while, and the drill is about connections held for seconds.
    server = drill.start_server(
        REDIS_URL=f"redis://127.0.0.1:{black_hole_port}/0", DATABASE_POOL_MAX_SIZE=POOL_MAX, DATABASE_POOL_TIMEOUT=10
    )

    with CustomerStream(drill.bot, HUNG_CUSTOMERS, window=20) as stream:
        stream.wait_for_acknowledged(30, "updates with Redis hung")
        sent = stream.finish()

    assert Counter(drill.services.inbound(HUNG_CUSTOMERS)) == Counter(sent)
    deliveries = drill.bot.deliveries()
    assert [(attempt["status"], attempt["error"]) for attempt in deliveries] == [(200, None)] * len(sent)
    assert "timed out after" in server.log()
