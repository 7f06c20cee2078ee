"""The product's channel layer (realtime.layers) on private Redis servers that the tests stop and restart:
a receiver that may have missed messages is told so, instead of waiting on as if nothing happened."""

import asyncio

import pytest
import redis.exceptions

from realtime.layers import ChannelQueue, LayerUnavailable, RedisPubSubChannelLayer, SubscriptionLost
from tests.conftest import wait_on_loop_until, wait_until


def layer_on(*shards):
    return RedisPubSubChannelLayer(hosts=[{"address": shard.url, "socket_timeout": 5} for shard in shards])


def group_on(layer, shard_index):
    """A group name whose messages travel through the shard ``shard_index``."""
    return next(name for number in range(1000) if layer.shard_of_group(name := f"group-{number}") == shard_index)


def shard_of(layer, channel):
    loop_layer = layer._get_layer()
    return loop_layer._shards.index(loop_layer._get_shard(channel))


async def channel_while_shards_are_down(layer):
    """A new channel of ``layer`` whose own subscription lives on a shard that is up."""
    while True:
        try:
            return await layer.new_channel()
        except LayerUnavailable:
            pass  # its name hashed to a stopped shard


async def joined(layer, group):
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    return channel


async def listening(redis):
    """A receiver's channel in the group "room" that has heard a sender on ``redis``: (receiver, sender,
    channel, what it heard)."""
    receiver, sender = layer_on(redis), layer_on(redis)
    channel = await joined(receiver, "room")
    await sender.group_send("room", {"type": "before"})
    return receiver, sender, channel, await asyncio.wait_for(receiver.receive(channel), 5)


def test_a_redis_restart_ends_the_receivers_it_cut_off_and_new_ones_hear_again(redis_server):
    redis = redis_server()

    async def scenario():
        receiver, sender, channel, before = await listening(redis)
        waiting = asyncio.ensure_future(receiver.receive(channel))

        redis.stop()
        redis.start()
        # Restarted between two of the layer's polls: what was published meanwhile is gone, so it must say so.
        with pytest.raises(SubscriptionLost):
            await asyncio.wait_for(waiting, 10)

        again = await joined(receiver, "room")
        # The sender's pooled connection is from before the restart.
        await sender.group_send("room", {"type": "after"})
        after = await asyncio.wait_for(receiver.receive(again), 5)
        loop_layer = receiver._get_layer()
        left = (set(loop_layer.channels), {name: set(members) for name, members in loop_layer.groups.items()})
        for layer in (receiver, sender):
            await layer.flush()
        return before, after, left, again

    before, after, left, again = asyncio.run(scenario())

    assert (before, after) == ({"type": "before"}, {"type": "after"})
    # The ended channel is forgotten, with its group membership.
    assert left == ({again}, {"asgi__group__room": {again}})


def test_a_stopped_shard_ends_only_the_receivers_that_listened_through_it(redis_server):
    shards = [redis_server(), redis_server()]

    async def scenario():
        receiver, sender = layer_on(*shards), layer_on(*shards)
        staying_group, cut_group = group_on(receiver, 0), group_on(receiver, 1)
        # A channel whose own subscription and group both live on the first shard.
        while True:
            staying = await joined(receiver, staying_group)
            if receiver._get_layer()._shards.index(receiver._get_shard(staying)) == 0:
                break
            await receiver.group_discard(staying_group, staying)
        cut = await joined(receiver, cut_group)

        waiting = asyncio.ensure_future(receiver.receive(cut))
        shards[1].stop()
        with pytest.raises(SubscriptionLost):
            await asyncio.wait_for(waiting, 10)
        await sender.group_send(staying_group, {"type": "still here"})
        still = await asyncio.wait_for(receiver.receive(staying), 5)
        for layer in (receiver, sender):
            await layer.flush()
        return still

    assert asyncio.run(scenario()) == {"type": "still here"}


def pings_answered(redis):
    """How many PINGs the server has answered so far."""
    return redis.client().info("commandstats").get("cmdstat_ping", {}).get("calls", 0)


def test_a_redis_that_went_silent_ends_the_receivers_that_listened_through_it(redis_server):
    redis = redis_server()

    async def scenario():
        receiver, sender, channel, before = await listening(redis)
        # Only now: a machine that stalled longer than the PONG window before this point would end it early.
        receiver.PING_EVERY_SECONDS, receiver.PONG_WITHIN_SECONDS = 0.2, 1
        waiting = asyncio.ensure_future(receiver.receive(channel))

        # Its connections stay open and no read fails: only an unanswered PING tells.
        redis.pause()
        try:
            with pytest.raises(SubscriptionLost):
                await asyncio.wait_for(waiting, 10)
        finally:
            redis.resume()
        loop_layer = receiver._get_layer()
        left = (loop_layer.channels, loop_layer.groups)
        for layer in (receiver, sender):
            await layer.flush()
        return before, left

    before, left = asyncio.run(scenario())

    assert before == {"type": "before"}
    assert left == ({}, {})


def test_an_idle_subscriber_connection_is_pinged_and_the_answers_end_no_channel(redis_server):
    redis = redis_server()

    async def scenario():
        # The count starts here, without the server fixture's own readiness PING.
        await asyncio.to_thread(redis.client().config_resetstat)
        receiver, sender = layer_on(redis), layer_on(redis)
        receiver.PING_EVERY_SECONDS = 0.05
        channel = await joined(receiver, "room")
        # Several PINGs answered while the channel waits, and it goes on.
        await asyncio.to_thread(wait_until, lambda: pings_answered(redis) >= 3, message="PINGs from the layer")
        for number in range(2):
            await sender.group_send("room", {"type": "event", "number": number})
        received = [await asyncio.wait_for(receiver.receive(channel), 5) for _ in range(2)]
        for layer in (receiver, sender):
            await layer.flush()
        return received

    assert asyncio.run(scenario()) == [{"type": "event", "number": 0}, {"type": "event", "number": 1}]


def test_redis_errors_reach_the_layers_callers_as_layer_unavailable_with_the_error_as_its_cause(redis_server):
    shards = [redis_server(), redis_server()]

    async def scenario():
        layer = layer_on(*shards)
        # Names that travel through the second shard, stopped before the layer connected to it.
        down_group = group_on(layer, 1)
        down_channel = next(name for number in range(1000) if shard_of(layer, name := f"elsewhere.{number}") == 1)
        shards[1].stop()
        channel = await channel_while_shards_are_down(layer)
        failures = []
        for call in (
            lambda: layer.group_add(down_group, channel),
            lambda: layer.group_send(down_group, {"type": "lost"}),
            lambda: layer.send(down_channel, {"type": "lost"}),
        ):
            try:
                await call()
            except Exception as error:
                failures.append(error)
        await layer.flush()
        return failures

    failures = asyncio.run(scenario())

    assert [type(error) for error in failures] == [LayerUnavailable] * 3
    assert all(isinstance(error.__cause__, redis.exceptions.ConnectionError) for error in failures)


def test_a_channel_that_cannot_join_a_group_is_forgotten_with_its_other_groups(redis_server):
    shards = [redis_server(), redis_server()]

    async def scenario():
        layer = layer_on(*shards)
        shards[1].stop()  # before the layer connected to it
        channel = await channel_while_shards_are_down(layer)
        await layer.group_add(group_on(layer, 0), channel)
        with pytest.raises(LayerUnavailable):
            await layer.group_add(group_on(layer, 1), channel)
        loop_layer = layer._get_layer()
        left = (dict(loop_layer.channels), dict(loop_layer.groups))
        await layer.forget(channel)  # again: nothing left to do
        await layer.flush()
        return left

    assert asyncio.run(scenario()) == ({}, {})


def test_a_channel_that_falls_more_than_its_capacity_behind_gets_subscription_lost_before_anything_else(
    redis_server,
):
    redis = redis_server()

    async def scenario():
        receiver, sender = layer_on(redis), layer_on(redis)
        receiver.CAPACITY = 3
        stalled, marker = await receiver.new_channel(), await receiver.new_channel()
        for number in range(6):
            await sender.send(stalled, {"type": "event", "number": number})
        # One subscriber connection delivers in order: once the marker is in, so were the six before it.
        await sender.send(marker, {"type": "marker"})
        await asyncio.wait_for(receiver.receive(marker), 5)
        # A socket this far behind must not work through the stale messages before it learns that it closes.
        with pytest.raises(SubscriptionLost):
            await asyncio.wait_for(receiver.receive(stalled), 5)
        left = set(receiver._get_layer().channels)
        for layer in (receiver, sender):
            await layer.flush()
        return left, marker

    left, marker = asyncio.run(scenario())

    assert left == {marker}


def test_an_error_while_delivering_a_message_ends_the_channels_it_was_for_and_the_shard_goes_on_receiving(
    redis_server, monkeypatch, caplog
):
    redis = redis_server()
    deliver, failed = ChannelQueue.deliver, []

    def deliver_failing_once(queue, data):
        # No Redis reply makes delivery fail today: a bug of ours stands in for whatever might.
        if not failed:
            failed.append(data)
            raise RuntimeError("a bug while delivering")
        deliver(queue, data)

    monkeypatch.setattr(ChannelQueue, "deliver", deliver_failing_once)

    async def scenario():
        receiver, sender = layer_on(redis), layer_on(redis)
        # Whichever member's delivery fails, the other must not go on with a message its colleague missed.
        members = [await joined(receiver, "room") for _ in range(2)]
        await sender.group_send("room", {"type": "event"})
        for member in members:
            with pytest.raises(SubscriptionLost):
                await asyncio.wait_for(receiver.receive(member), 5)
        later = await receiver.new_channel()
        await sender.send(later, {"type": "later"})
        received = await asyncio.wait_for(receiver.receive(later), 5)
        for layer in (receiver, sender):
            await layer.flush()
        return received

    assert asyncio.run(scenario()) == {"type": "later"}
    failures = [record for record in caplog.records if record.name == "realtime.layers"]
    assert [record.exc_info[0] for record in failures] == [RuntimeError]


def test_after_losing_its_subscriptions_a_shard_pauses_before_it_receives_again(redis_server):
    redis = redis_server()

    async def scenario():
        loop = asyncio.get_running_loop()
        receiver, sender = layer_on(redis), layer_on(redis)
        lost = await receiver.new_channel()
        await sender.send(lost, {"type": "subscribed"})
        await asyncio.wait_for(receiver.receive(lost), 5)
        waiting = asyncio.ensure_future(receiver.receive(lost))

        started = loop.time()
        await asyncio.to_thread(redis.client().client_kill_filter, _type="pubsub")
        with pytest.raises(SubscriptionLost):
            await asyncio.wait_for(waiting, 10)
        later = await receiver.new_channel()
        await sender.send(later, {"type": "after"})
        after = await asyncio.wait_for(receiver.receive(later), 10)
        waited = loop.time() - started
        for layer in (receiver, sender):
            await layer.flush()
        return after, waited, receiver.PAUSE_AFTER_LOSS_SECONDS

    after, waited, pause = asyncio.run(scenario())

    assert after == {"type": "after"}
    # A lower bound only (a busy machine makes it longer, never shorter): the shard read nothing meanwhile.
    assert waited >= pause


def test_a_publish_waiting_on_redis_holds_up_no_unsubscribe(redis_server):
    redis = redis_server()

    async def scenario():
        # No socket timeout: the publish waits as long as Redis is frozen.
        layer = RedisPubSubChannelLayer(hosts=[{"address": redis.url, "socket_timeout": None}])
        channel = await joined(layer, "room")
        redis.pause()
        try:
            publishing = asyncio.ensure_future(layer.group_send("room", {"type": "typing"}))
            # Under way: it has a connection of its own besides the subscriber's, and waits for Redis on it.
            pool = layer._get_layer()._shards[0]._redis.connection_pool
            await wait_on_loop_until(lambda: len(list(pool._get_in_use_connections())) == 2, message="the publish")
            # UNSUBSCRIBE expects no reply: forgetting the channel needs nothing from the frozen Redis.
            await asyncio.wait_for(layer.forget(channel), 10)
            still_publishing = not publishing.done()
        finally:
            redis.resume()
        await asyncio.wait_for(publishing, 10)
        loop_layer = layer._get_layer()
        left = (loop_layer.channels, loop_layer.groups, loop_layer._shards[0]._subscribed_to)
        await layer.flush()
        return still_publishing, left

    still_publishing, left = asyncio.run(scenario())

    assert still_publishing
    assert left == ({}, {}, set())


def test_joining_a_group_with_a_channel_already_ended_raises_subscription_lost(redis_server):
    redis = redis_server()

    async def scenario():
        # A socket's receive task runs beside its connect: a loss can forget the channel between two joins.
        layer = layer_on(redis)
        channel = await joined(layer, "sockets.1")
        await layer.forget(channel)
        with pytest.raises(SubscriptionLost):
            await layer.group_add("room", channel)
        loop_layer = layer._get_layer()
        left = (loop_layer.channels, loop_layer.groups)
        await layer.flush()
        return left

    assert asyncio.run(scenario()) == ({}, {})


def test_a_subscriber_connection_that_redis_py_reconnects_on_its_own_ends_its_listeners(redis_server):
    redis = redis_server()

    async def scenario():
        receiver, sender = layer_on(redis), layer_on(redis)
        receiver.PING_EVERY_SECONDS = 0  # every idle poll of the receive task waits for the shard's lock to PING
        own, member = await receiver.new_channel(), await joined(receiver, "room")
        waiting = [asyncio.ensure_future(receiver.receive(channel)) for channel in (own, member)]
        shard = receiver._get_layer()._shards[0]
        async with shard._lock:
            # The receive task waits for the lock, not reading: no read fails to tell it what happens now.
            await wait_on_loop_until(lambda: shard._lock._waiters, message="the receive task to wait for the lock")
            # Down, as a failed SUBSCRIBE, UNSUBSCRIBE or PING leaves it when Redis does not answer its reconnect.
            await shard._pubsub.connection.disconnect()
            for channel in (own, member):
                await sender.send(channel, {"type": "lost"})
            await sender.group_send("room", {"type": "lost"})
        # Its PING now reconnects, and redis-py would subscribe again as if nothing had been missed.
        for receiving in waiting:
            with pytest.raises(SubscriptionLost):
                await asyncio.wait_for(receiving, 10)
        for layer in (receiver, sender):
            await layer.flush()

    asyncio.run(scenario())


async def heard_then_closed(receiver, channel, sender):
    """What ``channel`` of ``receiver`` receives (a message ``sender`` sent it); then both layers are closed."""
    try:
        return await asyncio.wait_for(receiver.receive(channel), 10)
    finally:
        for layer in (receiver, sender):
            await layer.flush()


async def frozen_receive_task(shard):
    """Hold ``shard``'s lock once its receive task waits for it (with PING_EVERY_SECONDS = 0 every idle poll
    does), so that nothing reads the subscriber connection meanwhile."""
    await shard._lock.acquire()
    await wait_on_loop_until(lambda: shard._lock._waiters, message="the receive task to wait for the lock")


@pytest.mark.parametrize("drop", ["before the subscribe", "while the subscribe waits for the lock"])
def test_a_channel_subscribed_once_redis_answers_again_is_not_ended_for_a_connection_left_down(redis_server, drop):
    redis = redis_server()

    async def scenario():
        receiver, sender = layer_on(redis), layer_on(redis)
        receiver.PING_EVERY_SECONDS = 0
        stale = await receiver.new_channel()
        stale_receiving = asyncio.ensure_future(receiver.receive(stale))
        shard = receiver._get_layer()._shards[0]
        await frozen_receive_task(shard)

        async def new_channel_queued_for_the_lock():
            # Behind the receive task's PING, which reconnects the connection before it.
            subscribing = asyncio.ensure_future(receiver.new_channel())
            await wait_on_loop_until(lambda: len(shard._lock._waiters) == 2, message="the subscribe to wait")
            return subscribing

        if drop == "while the subscribe waits for the lock":
            later = await new_channel_queued_for_the_lock()
        # Down, as a failed UNSUBSCRIBE leaves it while Redis is away (a socket refused during an outage).
        await shard._pubsub.connection.disconnect()
        if drop == "before the subscribe":
            later = await new_channel_queued_for_the_lock()  # Redis answers again: a new socket's channel
        shard._lock.release()
        fresh = await later
        with pytest.raises(SubscriptionLost):
            await asyncio.wait_for(stale_receiving, 10)
        await sender.send(fresh, {"type": "after"})
        return await heard_then_closed(receiver, fresh, sender)

    # The new channel missed nothing: it is heard, not ended with the channels of the connection that dropped.
    assert asyncio.run(scenario()) == {"type": "after"}


def test_a_channel_subscribing_after_the_others_left_a_re_made_connection_is_not_ended_for_it(redis_server):
    redis = redis_server()

    async def scenario():
        receiver, sender = layer_on(redis), layer_on(redis)
        left = await receiver.new_channel()
        shard = receiver._get_layer()._shards[0]
        await receiver._get_layer().forget(left)
        await wait_on_loop_until(lambda: not shard._pubsub.subscribed, message="the UNSUBSCRIBE to be confirmed")
        # redis-py re-made the connection while it had subscriptions (SubscriberConnection marks it); they
        # were all unsubscribed since, so no poll took the mark for a loss.
        shard._pubsub.reconnected = True
        fresh = await receiver.new_channel()
        await sender.send(fresh, {"type": "after"})
        return await heard_then_closed(receiver, fresh, sender)

    assert asyncio.run(scenario()) == {"type": "after"}


def test_a_channel_joining_a_group_whose_subscription_dropped_ends_the_members_not_itself(redis_server):
    shards = [redis_server(), redis_server()]

    async def scenario():
        receiver, sender = layer_on(*shards), layer_on(*shards)
        receiver.PING_EVERY_SECONDS = 0
        room = group_on(receiver, 0)
        member = await joined(receiver, room)
        member_receiving = asyncio.ensure_future(receiver.receive(member))
        joining = await receiver.new_channel()
        while shard_of(receiver, joining) != 1:  # its own subscription on the shard that stays up
            joining = await receiver.new_channel()
        shard = receiver._get_layer()._shards[0]
        await frozen_receive_task(shard)
        await shard._pubsub.connection.disconnect()
        shard._lock.release()
        await receiver.group_add(room, joining)
        with pytest.raises(SubscriptionLost):
            await asyncio.wait_for(member_receiving, 10)
        await sender.group_send(room, {"type": "after"})
        return await heard_then_closed(receiver, joining, sender)

    assert asyncio.run(scenario()) == {"type": "after"}


def test_forgetting_a_channel_unsubscribes_its_groups_even_if_the_caller_is_cancelled(redis_server):
    redis = redis_server()

    async def scenario():
        layer = layer_on(redis)
        channel = await joined(layer, "room")
        await layer.group_add("sockets.1", channel)
        shard = layer._get_layer()._shards[0]
        async with shard._lock:  # held, as by a PING: forget() waits for it to unsubscribe
            forgetting = asyncio.ensure_future(layer.forget(channel))
            await wait_on_loop_until(lambda: shard._lock._waiters, message="forget() to wait for the lock")
            # As channels cancels a consumer's receive task, which may be forgetting its channel after a loss.
            forgetting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await forgetting
        # Its unsubscribes go on once the lock is free.
        await wait_on_loop_until(lambda: not shard._subscribed_to, message="the unsubscribes")
        loop_layer = layer._get_layer()
        left = (loop_layer.channels, loop_layer.groups, set(shard._subscribed_to))
        await layer.flush()
        return left

    assert asyncio.run(scenario()) == ({}, {}, set())
