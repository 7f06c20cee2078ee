"""Desk sockets on the product's channel layer (realtime.layers) over private Redis servers that the tests
break: what a failure of the layer closes, what it does not, and that an ended socket leaves nothing in it."""

import asyncio
import itertools

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from realtime.consumers import LAYER_UNAVAILABLE
from realtime.groups import agent_sockets, ticket_group
from realtime.layers import RedisPubSubChannelLayer

from .conftest import TIMEOUT, connect, customer_writes, open_socket

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def use_layer_on(settings):
    """Point the channel layer at private Redis servers: a fresh layer, on this test's event loop."""

    def use(*shards):
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "realtime.layers.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [{"address": shard.url, "socket_timeout": 5} for shard in shards]},
            }
        }

    return use


@pytest.fixture(autouse=True)
def telegram(sandbox_bot):
    return sandbox_bot


def left_in_layer():
    """The channels and group memberships the layer still holds in this event loop."""
    layer = get_channel_layer()._get_layer()
    return dict(layer.channels), {name: set(members) for name, members in layer.groups.items()}


def subscribes(shard):
    return shard.client().info("commandstats").get("cmdstat_subscribe", {}).get("calls", 0)


async def test_typing_redis_fails_to_relay_leaves_the_socket_open_and_a_lost_subscription_closes_it(
    agent, redis_server, use_layer_on, caplog
):
    redis = redis_server()
    use_layer_on(redis)
    ticket = (await sync_to_async(customer_writes)()).ticket
    socket = await connect(f"/ws/tickets/{ticket.pk}/", agent)
    last_seq = (await socket.resume())[-1]["seq"]

    # Redis refuses every PUBLISH, and still carries the subscriptions.
    await asyncio.to_thread(redis.client().execute_command, "ACL", "SETUSER", "default", "-publish")
    await socket.send({"type": "typing", "state": "start"})
    still_answers = await socket.resume(last_seq)
    redis.stop()
    closed = await socket.communicator.receive_output(TIMEOUT)

    assert still_answers == []
    assert "not relayed, the channel layer is unavailable" in caplog.text
    assert closed == {"type": "websocket.close", "code": LAYER_UNAVAILABLE}
    assert left_in_layer() == ({}, {})


async def test_a_socket_refused_because_its_rooms_shard_is_down_leaves_nothing_in_the_layer(
    agent, redis_server, use_layer_on
):
    shards = [redis_server(), redis_server()]
    # A room on the shard that goes down, and the agent's own group (joined first) on the other.
    placement = RedisPubSubChannelLayer(hosts=[shard.url for shard in shards])  # only hashes names
    up = placement.shard_of_group(agent_sockets(agent.pk))
    for user_id in itertools.count(500):
        ticket = (await sync_to_async(customer_writes)(user_id=user_id)).ticket
        if placement.shard_of_group(ticket_group(ticket.pk)) != up:
            break
    # Only now, after the tickets' broadcasts: the layer has no connection yet, like one after a restart (a
    # pooled connection from before would take the SUBSCRIBE, and the failure would come as a lost subscription).
    use_layer_on(*shards)
    shards[1 - up].stop()

    # A socket whose own channel hashes to the stopped shard is refused at once; the one that matters here
    # subscribed its channel and the agent's group on the running shard before its room failed.
    for _ in range(30):
        before = await asyncio.to_thread(subscribes, shards[up])
        accepted, _ = await open_socket(f"/ws/tickets/{ticket.pk}/", agent)
        assert not accepted
        assert left_in_layer() == ({}, {})
        if await asyncio.to_thread(subscribes, shards[up]) >= before + 2:
            break
    else:
        pytest.fail("No socket's channel landed on the running shard.")
