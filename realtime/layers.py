"""The channel layer on Redis: channels-redis' pub/sub layer, made to tell its receivers what it lost.

The pub/sub layer delivers at most once. When a shard's subscriber connection drops (Redis restarted or
failed over), channels-redis 4.3 logs the error and redis-py subscribes again once Redis answers, but
whatever was published in between is gone while the consumers go on waiting: a desk socket would stay open
and silently miss events. Here every channel that listened through that connection gets SubscriptionLost
from receive() instead, so its consumer ends (realtime.consumers closes the socket with 4503) and the
client's reconnect and resume read the gap from the history (G12). The same goes for a connection that
redis-py re-made on its own, one that stops answering (a PING goes unanswered), a message that could not
be delivered to all its channels, and a channel that falls more than CAPACITY messages behind.
Redis errors reach the layer's callers as LayerUnavailable, and a channel that ends leaves nothing behind
(forget). docs/architecture.md, "The channel layer".
"""

import asyncio
import contextlib
import logging

from channels_redis import pubsub
from channels_redis.utils import _wrap_close, create_pool
from redis import asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# These subclasses rely on private internals of channels-redis 4.3.0, pinned in requirements.txt. On an upgrade,
# re-check in channels_redis/pubsub.py: the loop layer's `channels` (name -> queue, made only in
# `_subscribe_to_channel`) and `groups` (group channel -> channel names), `_shards`, `_get_shard`,
# `_get_group_channel_name`, `_layers`/`_args`/`_kwargs` in `_get_layer`; that `receive()` unsubscribes and drops a
# cancelled channel, deserializing each queued item through the outer layer; that `group_add` records the membership
# before it subscribes; and the shard connection's `_lock`, `_redis`, `_pubsub`, `_subscribed_to`, `_ensure_receiver`,
# and `subscribe`, `_do_receiving`, `_receive_message` and `_ensure_redis`, replaced here. From redis-py (8.1): a PING
# on a subscribed connection comes back from `get_message()` as a "pong" with channel None; the pub/sub registers its
# `on_connect` as the connection's connect callback after the first connect, and reconnects in the paths named in
# SubscriberConnection; its `connection.is_connected`.


class LayerUnavailable(Exception):
    """Redis failed a command of the layer (the error is the cause): the channel it was for cannot go on."""


class SubscriptionLost(LayerUnavailable):
    """The layer's subscription to a shard dropped, or the channel fell too far behind: messages for this channel
    may have been lost."""


class RedisPubSubChannelLayer(pubsub.RedisPubSubChannelLayer):
    # The limits, read where they apply: a test may set them on an instance.
    CAPACITY = 1000  # messages waiting on one channel; past them it gets SubscriptionLost instead of more
    PING_EVERY_SECONDS = 10  # of silence on a shard's subscriber connection, before the layer sends a PING
    PONG_WITHIN_SECONDS = 5  # for the PONG, else the subscriptions through that connection are lost
    PAUSE_AFTER_LOSS_SECONDS = 1  # before a shard that lost its subscriptions receives again

    def _get_layer(self):
        # channels-redis' own, building our loop layer: one per event loop, flushed when the loop closes.
        loop = asyncio.get_running_loop()
        if loop not in self._layers:
            self._layers[loop] = LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
        return self._layers[loop]

    def shard_count(self):
        return len(self._get_layer()._shards)

    def shard_of_group(self, group):
        """The index of the Redis shard that carries ``group``'s messages (channels-redis has no public way to
        ask). Like the rest of the layer, it needs a running event loop."""
        layer = self._get_layer()
        return layer._shards.index(layer._get_shard(layer._get_group_channel_name(group)))

    async def forget(self, channel):
        """Drop ``channel``: its queue, its group memberships and the subscriptions no channel needs any more."""
        await self._get_layer().forget(channel)

    def deserialize(self, message):
        # A lost connection's loss is queued after the messages received before it; an overflow's replaces them.
        if isinstance(message, SubscriptionLost):
            raise message
        return super().deserialize(message)


class LoopLayer(pubsub.RedisPubSubLoopLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._shards = [ShardConnection(shard.host, self) for shard in self._shards]

    async def _subscribe_to_channel(self, channel):
        # channels-redis' own, with a bounded queue, and without keeping the queue of a channel it could not
        # subscribe (one per socket refused while Redis is down).
        self.channels[channel] = ChannelQueue(self.channel_layer.CAPACITY)
        try:
            await self._get_shard(channel).subscribe(channel)
        except BaseException:
            self.channels.pop(channel, None)
            raise

    async def receive(self, channel):
        try:
            return await super().receive(channel)
        except SubscriptionLost:
            await self.forget(channel)
            raise

    async def group_add(self, group, channel):
        if channel not in self.channels:
            # Ended (forgotten after a loss) while its consumer was still joining its groups, which channels
            # runs beside the receive: a close with 4503, not channels-redis' RuntimeError (an error, 1011).
            raise SubscriptionLost(f"{channel} ended before it joined {group}")
        try:
            # Before the membership is recorded: a loss of the group's subscription found now ends its members,
            # not this channel, which missed nothing (see ShardConnection.subscribe).
            await self._get_shard(self._get_group_channel_name(group)).start_afresh_if_dropped()
            await super().group_add(group, channel)
        except LayerUnavailable:
            # A channel that cannot hear one of its groups must not go on as if it did: it ends, like one whose
            # subscription was lost, and leaves nothing behind.
            await self.forget(channel)
            raise

    async def forget(self, channel):
        """Drop ``channel``: its queue, its group memberships, and the subscriptions no channel needs any more.
        Idempotent. Redis errors are logged: a connection that failed loses its subscriptions anyway. The
        unsubscribing goes on if the caller is cancelled (channels cancels an ending consumer's receive task,
        which may be forgetting its channel after a loss): the groups are out of the dict by then, and nothing
        else would unsubscribe them."""
        await asyncio.shield(self._forget(channel))

    async def _forget(self, channel):
        self.channels.pop(channel, None)
        names = [channel]
        for group_channel, members in list(self.groups.items()):
            if channel in members:
                members.discard(channel)
                if not members:
                    del self.groups[group_channel]
                    names.append(group_channel)
        for name in names:
            if name in self.channels or name in self.groups:
                continue  # taken up again meanwhile
            shard = self._get_shard(name)
            if name not in shard._subscribed_to:
                continue  # never subscribed, or lost: nothing to wait for the shard's lock for
            try:
                await shard.unsubscribe(name)
            except LayerUnavailable as error:
                logger.warning("Could not unsubscribe %s from its Redis shard: %s", name, error)


class ChannelQueue(asyncio.Queue):
    """A channel's messages: at most ``capacity`` waiting; past them the waiting ones are dropped for
    SubscriptionLost, after which it takes no more."""

    def __init__(self, capacity):
        super().__init__()
        self.capacity = capacity
        self.ended = False

    def deliver(self, data):
        if self.ended:
            return
        if self.qsize() < self.capacity:
            self.put_nowait(data)
        else:
            # A socket this far behind would grow the process's memory without limit: it closes instead, and
            # its client resumes from the history (G12). At its next receive, not after the stale messages (an
            # inbox socket spends a database query on each).
            while not self.empty():
                self.get_nowait()
            self.end(SubscriptionLost(f"more than {self.capacity} messages were waiting"))

    def end(self, loss):
        if not self.ended:
            self.ended = True
            self.put_nowait(loss)


@contextlib.contextmanager
def _unavailable_on_redis_errors():
    try:
        yield
    except (RedisError, OSError) as error:
        raise LayerUnavailable(f"{type(error).__name__}: {error}") from error


class SubscriberConnection(PubSub):
    """redis-py's pub/sub, except that it does not subscribe again by itself after its connection was re-made.

    redis-py reconnects a pub/sub connection on its own: in its retry after a failed SUBSCRIBE, UNSUBSCRIBE,
    PING or read, and when a command or read finds the connection down. It then subscribes again, and what
    was published in between is gone unnoticed. Here the reconnect is marked instead, and the shard's
    receive task takes it for a loss."""

    reconnected = False

    async def on_connect(self, connection):
        # Called on every connect but the first (made before the pub/sub registers it).
        if self.subscribed:
            self.reconnected = True


class ShardConnection(pubsub.RedisSingleShardConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._retired = []  # subscriber connections replaced after a loss, for the receive task to close

    def _ensure_redis(self):
        # channels-redis' own, with the pub/sub above.
        if self._redis is None:
            self._redis = aioredis.Redis(connection_pool=create_pool(self.host))
            self._pubsub = SubscriberConnection(self._redis.connection_pool)

    async def publish(self, channel, message):
        # channels-redis' own holds `_lock` for the whole round trip, so that the subscriptions (and the PING)
        # would wait behind every publish. A publish needs only the client, whose pool is safe to share.
        with _unavailable_on_redis_errors():
            self._ensure_redis()
            redis = self._redis
            try:
                await redis.publish(channel, message)
            except RedisConnectionError:
                # A pooled connection opened before a Redis restart fails its first command and is then
                # dropped; had this send been lost, a socket that already resumed would miss its event.
                await redis.publish(channel, message)

    async def subscribe(self, channel):
        # channels-redis' own, first starting afresh (under the same lock) if an earlier command left the
        # connection down: a SUBSCRIBE is only written, so one into a connection Redis had closed "succeeds".
        # Subscribed through it once Redis answers again, this channel would be ended with the ones that
        # listened through it, though it missed nothing.
        with _unavailable_on_redis_errors():
            async with self._lock:
                self._afresh_if_dropped()
                if channel not in self._subscribed_to:
                    self._ensure_redis()
                    self._ensure_receiver()
                    await self._pubsub.subscribe(channel)
                    self._subscribed_to.add(channel)

    async def start_afresh_if_dropped(self):
        """Start afresh if an earlier command left the subscriber connection down (see ``subscribe``)."""
        async with self._lock:
            self._afresh_if_dropped()

    async def unsubscribe(self, channel):
        with _unavailable_on_redis_errors():
            await super().unsubscribe(channel)

    @property
    def limits(self):
        """The RedisPubSubChannelLayer this shard belongs to, whose attributes are the limits."""
        return self.channel_layer.channel_layer

    async def _do_receiving(self):
        # channels-redis' own, which must not end while the layer is in use: nothing else would receive.
        self._heard_from(asyncio.get_running_loop().time())
        while True:
            while self._retired:
                # Closed here, between polls: a poll may still be reading the connection when it is replaced.
                await _close(self._retired.pop())
            pubsub = self._pubsub
            try:
                message = await self._poll(pubsub)
            except Exception as error:
                if await self._lose_subscriptions(error, pubsub):
                    # A Redis that keeps failing must not make this loop spin.
                    await asyncio.sleep(self.limits.PAUSE_AFTER_LOSS_SECONDS)
                continue
            if message is None:
                continue
            try:
                self._receive_message(message)
            except Exception as error:
                index = self.channel_layer._shards.index(self)
                logger.exception("Could not deliver a message from Redis shard %d; receiving goes on.", index)
                try:
                    queues = self._queues_for(message)
                except Exception:
                    # Not even its channels are known: every channel of the shard may have missed it.
                    await self._lose_subscriptions(error, pubsub)
                    continue
                # Some of its channels may have it and others not: none of them goes on as if all had.
                for queue in queues:
                    queue.end(SubscriptionLost("a message could not be delivered"))

    async def _poll(self, pubsub):
        """The next message published to this shard's subscriptions through ``pubsub`` (its subscriber
        connection as this poll began), or None. Raises if the connection fails, or if Redis leaves a PING
        unanswered: a Redis that vanished silently (a frozen process, a dropped network path) never fails a
        read."""
        if not (pubsub and pubsub.subscribed):
            self._heard_from(asyncio.get_running_loop().time())
            await asyncio.sleep(0.1)
            return None
        if self._dropped(pubsub):
            # A command that failed left it down (or redis-py re-made it): messages may have been missed. The
            # command's caller holds the lock, so its loss is noticed here (or by the next subscribe) rather
            # than there.
            raise RedisConnectionError("the subscriber connection dropped")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        now = asyncio.get_running_loop().time()
        if message is not None:
            self._heard_from(now)
        elif self._pinged_at is not None:
            if now - self._pinged_at > self.limits.PONG_WITHIN_SECONDS:
                # After a stall of this process (not of Redis) the PONG may be in, unread: one last look at
                # what is buffered.
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
                if message is None:
                    raise TimeoutError(f"Redis left a PING unanswered for {self.limits.PONG_WITHIN_SECONDS} s")
                self._heard_from(now)
        elif now - self._heard_at >= self.limits.PING_EVERY_SECONDS:
            async with self._lock:
                # Unsubscribed (or lost) while this waited for the lock: a PING would get its PONG read by no one.
                if pubsub is self._pubsub and pubsub.subscribed:
                    await pubsub.ping()
                    # From when the PING was written, not from before the lock was free.
                    self._pinged_at = asyncio.get_running_loop().time()
        return message  # a PONG (channel None) reaches no channel

    @staticmethod
    def _dropped(pubsub):
        """Whether redis-py re-made ``pubsub``'s connection, or it went down with subscriptions on it."""
        if pubsub is None:
            return False
        connection = pubsub.connection
        return pubsub.reconnected or (pubsub.subscribed and connection is not None and not connection.is_connected)

    def _heard_from(self, now):
        """Redis said something at ``now`` (or the connection starts afresh): the connection is alive."""
        self._heard_at, self._pinged_at = now, None

    def _receive_message(self, message):
        # channels-redis' own, through the channels' bounded queues.
        for queue in self._queues_for(message):
            queue.deliver(message["data"])

    def _queues_for(self, message):
        """The queues of the channels ``message`` is for: its channel's, or its group's members'."""
        channels = self.channel_layer.channels
        name = message["channel"]
        name = name.decode() if isinstance(name, bytes) else name
        names = [name] if name in channels else self.channel_layer.groups.get(name, ())
        return [channels[channel] for channel in names if channel in channels]

    async def _lose_subscriptions(self, error, pubsub):
        """Start this shard's subscriptions afresh, and tell every channel that listened through them, unless
        ``pubsub`` (the subscriber connection that failed) was replaced already: the one now is fresh. Says
        whether it started afresh."""
        async with self._lock:
            if self._pubsub is not pubsub:
                return False
            self._start_afresh(error)
            return True

    def _afresh_if_dropped(self):
        """Holding the lock: start afresh if the subscriber connection is down (or was re-made)."""
        if self._dropped(self._pubsub):
            self._start_afresh(RedisConnectionError("the subscriber connection dropped"))

    def _start_afresh(self, error):
        """Holding the lock: a new subscriber connection, and every channel that listened through the old one
        ends. The old one is closed by the receive task (``_retired``)."""
        layer = self.channel_layer
        fresh = SubscriberConnection(self._redis.connection_pool)
        lost, self._subscribed_to = self._subscribed_to, set()
        if self._pubsub is not None:
            self._retired.append(self._pubsub)
        self._pubsub = fresh
        self._heard_from(asyncio.get_running_loop().time())
        listeners = {name for name in lost if name in layer.channels}
        for name in lost:
            listeners.update(layer.groups.get(name, ()))
        for channel in listeners:
            if channel in layer.channels:
                layer.channels[channel].end(SubscriptionLost(str(error)))
        logger.warning(
            "Lost the subscriptions to Redis shard %d (%s): %d channels end, their sockets reconnect and resume.",
            layer._shards.index(self),
            error,
            len(listeners),
        )


async def _close(pubsub):
    """Close a subscriber connection that failed."""
    try:
        await pubsub.aclose()
    except Exception:
        # Only the broken connection's bookkeeping is left to drop; the shard goes on.
        logger.debug("Closing a broken subscriber connection failed.", exc_info=True)
