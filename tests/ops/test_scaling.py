"""Past one machine: the channel layer and the cache sharded over several Redis instances, or found
through Redis Sentinel, configured from the environment alone."""

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack

import httpx
import pytest
import redis

from bots.flood_limit import NEXT_SEND, reserve_send_slot
from realtime.groups import INBOX, ticket_group
from realtime.layers import RedisPubSubChannelLayer
from tests.bots import factories
from tests.bots.test_delivery import customer_ticket, reply_in, settled
from tests.conftest import WEBHOOK_SECRET, free_port, unique_bot_token, wait_until
from tests.realtime.live import live_socket, staff_session, stored_message
from tests.tickets.test_services import run_at_once
from tickets import services

# The servers' channel-layer prefix (settings.py): their shards' URLs name no database, so 0.
PREFIX = f"{os.environ['REDIS_PREFIX']}:0:asgi"


def layer_on(shards):
    return RedisPubSubChannelLayer(hosts=[shard.url for shard in shards], prefix=PREFIX)


def shard_of_group(shards, group):
    """The index of the shard that carries ``group``'s messages, as the servers place it."""

    async def placed():
        return layer_on(shards).shard_of_group(group)

    return asyncio.run(placed())


def test_two_servers_on_two_redis_shards_carry_group_events_across_them(start_server, redis_server):
    shards = [redis_server(), redis_server()]
    urls = ",".join(shard.url for shard in shards)
    first = start_server(REDIS_URL=urls)
    second = start_server(token=first.token, REDIS_URL=urls)
    updates = [(first, factories.update(7100, "to the first server")), (second, factories.update(7101, "to the 2nd"))]

    async def scenario():
        layer = layer_on(shards)
        channel = await layer.new_channel()
        await layer.group_add(INBOX, channel)
        async with httpx.AsyncClient(timeout=30) as client:
            for server, update in updates:
                response = await client.post(
                    f"{server.url}/telegram/webhook/",
                    json=update,
                    headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET},
                )
                assert response.status_code == 200
        received = set()
        while len(received) < 2:
            for event in (await asyncio.wait_for(layer.receive(channel), 10))["events"]:
                if event["type"] == "message" and event["message"]["direction"] == "in":
                    received.add(event["message"]["text"])
        await layer.flush()
        return received

    # A listener on the shards hears the inbound messages broadcast by both servers.
    assert asyncio.run(scenario()) == {"to the first server", "to the 2nd"}


def channel_layer_prefix(redis_url):
    """The channel-layer prefix supportsite.settings gives a deployment on ``redis_url``."""
    code = "from supportsite import settings; print(settings.CHANNEL_LAYERS['default']['CONFIG']['prefix'])"
    env = {**os.environ, "DJANGO_DEBUG": "1", "REDIS_URL": redis_url}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_deployments_on_their_own_databases_of_one_redis_do_not_hear_each_other(start_server, redis_server):
    """Pub/sub channels are global to a Redis server, whatever database a client selects: the settings
    keep deployments on databases of their own apart (the same REDIS_PREFIX, and customer text, in both)."""
    redis = redis_server()
    own, other = (redis.url.rsplit("/", 1)[0] + f"/{db}" for db in (1, 2))
    ours = start_server(REDIS_URL=own)
    theirs = start_server(REDIS_URL=other)

    async def scenario():
        layer = RedisPubSubChannelLayer(hosts=[own], prefix=channel_layer_prefix(own))
        channel = await layer.new_channel()
        await layer.group_add(INBOX, channel)
        async with httpx.AsyncClient(timeout=30) as client:
            # Theirs first: a leak would arrive before our own message.
            for server, update in ((theirs, factories.update(7300, "theirs")), (ours, factories.update(7301, "ours"))):
                response = await client.post(
                    f"{server.url}/telegram/webhook/",
                    json=update,
                    headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET},
                )
                assert response.status_code == 200
        heard = []
        while "ours" not in heard:
            for event in (await asyncio.wait_for(layer.receive(channel), 10))["events"]:
                if event["type"] == "message" and event["message"]["direction"] == "in":
                    heard.append(event["message"]["text"])
        await layer.flush()
        return heard

    assert asyncio.run(scenario()) == ["ours"]


# Sockets per agent and ticket: each socket's own channel lives on the shard its random name hashes to, so
# with several per server both shards carry some of them.
SOCKETS_PER_AGENT = 4


@pytest.mark.django_db(transaction=True)
def test_agents_on_two_servers_on_two_redis_shards_see_each_others_typing_and_messages(start_server, redis_server):
    shards = [redis_server(), redis_server()]
    urls = ",".join(shard.url for shard in shards)
    servers = [start_server(REDIS_URL=urls), None]
    servers[1] = start_server(token=servers[0].token, REDIS_URL=urls)
    agents = [staff_session(servers[0], "alice"), staff_session(servers[1], "bob")]
    # A ticket whose room (its group) lives on each shard.
    rooms = {}
    for user_id in itertools.count(7200):
        if len(rooms) == len(shards):
            break
        ticket = services.record_inbound_message(
            services.TelegramProfile(user_id=user_id), text="hi", telegram_message_id=1
        )[0].ticket
        rooms.setdefault(shard_of_group(shards, ticket_group(ticket.pk)), (user_id, ticket))

    for user_id, ticket in rooms.values():
        with ExitStack() as stack:
            sockets = [
                [
                    stack.enter_context(live_socket(server.url, cookie, f"/ws/tickets/{ticket.pk}/"))
                    for _ in range(SOCKETS_PER_AGENT)
                ]
                for server, (_, cookie) in zip(servers, agents, strict=True)
            ]
            for socket in (*sockets[0], *sockets[1]):
                socket.resume(0)
            for typist, colleague in ((0, 1), (1, 0)):
                author = {"id": agents[typist][0].pk, "name": agents[typist][0].username}
                for state in ("start", "stop"):
                    sockets[typist][0].send({"type": "typing", "state": state})
                    for socket in sockets[colleague]:
                        typing = socket.receive_until(lambda event: event["type"] == "typing")[-1]
                        assert (typing["user"], typing["state"]) == (author, state)

            servers[1].post_update(factories.update(user_id, f"to ticket {ticket.pk}", message_id=2))
            message = stored_message(f"to ticket {ticket.pk}", user_id)
            for socket in (*sockets[0], *sockets[1]):
                event = socket.receive_until(lambda event: event["type"] == "message")[-1]
                assert event["message"]["id"] == message.pk


def health_of(finished):
    line = next(line for line in finished.output.splitlines() if line.startswith('{"status"'))
    return {check["name"]: (check["status"], check["detail"]) for check in json.loads(line)["checks"]}


def test_a_worker_on_two_redis_shards_sends_replies_within_telegrams_overall_limit(
    sandbox, start_worker, redis_server, agent
):
    shards = [redis_server(), redis_server()]
    bot = sandbox.client(unique_bot_token())
    replies = [reply_in(customer_ticket(bot, 7200 + number), agent, f"reply {number}") for number in range(3)]

    start_worker(bot.token, REDIS_URL=",".join(shard.url for shard in shards))
    for reply in replies:
        wait_until(settled(reply, "sent"), message="the replies to be sent")

    # The overall limit ran on one shard, the one its key hashes to (its key expires a second after use; the
    # script stays loaded).
    ran_on = [shard for shard in shards if redis.Redis(port=shard.port).script_exists(NEXT_SEND.sha)[0]]
    assert len(ran_on) == 1


def test_concurrent_sends_on_two_redis_shards_share_one_overall_limit(redis_server, settings):
    shards = [redis_server(), redis_server()]
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": [shard.url for shard in shards],
            "KEY_PREFIX": "limit-test",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.ShardClient"},
        }
    }
    settings.TELEGRAM_GLOBAL_MESSAGES_PER_SECOND = 4
    now = time.time() + 10**6  # a moment of this test's own
    waits = []

    run_at_once(8, lambda _: waits.append(reserve_send_slot(now)))

    # Each asked at once, each got its own place a quarter of a second after the one before: one limit.
    assert sorted(waits) == [0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


def test_the_healthcheck_reaches_every_shard(run_command, redis_server):
    shards = [redis_server(), redis_server()]

    finished = run_command("healthcheck", "--json", REDIS_URL=",".join(shard.url for shard in shards))

    health = health_of(finished)
    assert health["channel_layer"] == ("ok", "round trip through 2 Redis shards")
    assert health["cache"][0] == "ok"

    shards[1].stop()
    health = health_of(run_command("healthcheck", "--json", REDIS_URL=",".join(shard.url for shard in shards)))
    assert health["channel_layer"][0] == "fail"


@pytest.fixture
def sentinel(redis_server, tmp_path):
    """A Redis master and a Sentinel monitoring it as "supportsite-a"; yields the Sentinel's address."""
    master = redis_server()
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\nlogfile {tmp_path / 'sentinel.log'}\n"
        f"sentinel monitor supportsite-a 127.0.0.1 {master.port} 1\n"
    )
    process = subprocess.Popen(["redis-server", str(config), "--sentinel"], cwd=tmp_path)

    def knows_the_master():
        answer = subprocess.run(
            ["redis-cli", "-p", str(port), "sentinel", "get-master-addr-by-name", "supportsite-a"],
            capture_output=True,
            text=True,
        )
        return str(master.port) in answer.stdout

    wait_until(knows_the_master, message="the Sentinel to know its master")
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(15)


def test_redis_found_through_sentinel_serves_the_channel_layer_and_the_cache(run_command, sentinel):
    # DEBUG is off: had the layer or the cache fallen back to per-process memory, their checks would fail.
    finished = run_command(
        "healthcheck", "--json", REDIS_URL="", REDIS_SENTINELS=sentinel, REDIS_SENTINEL_MASTERS="supportsite-a"
    )

    health = health_of(finished)
    assert health["channel_layer"] == ("ok", "round trip through 1 Redis shard")
    assert health["cache"] == ("ok", "read back what it wrote")
