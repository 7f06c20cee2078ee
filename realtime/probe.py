"""A real round trip through the channel layer, for the health check (ops.health)."""

import uuid
from dataclasses import dataclass

from channels.layers import InMemoryChannelLayer, channel_layers


@dataclass(frozen=True)
class LayerProbe:
    shards: int  # how many Redis instances carried a round trip
    shared: bool  # False for the in-memory layer, which other processes cannot see


class ProbeLost(Exception):
    """The message sent through the layer did not come back as sent."""


def _probe_groups(layer):
    """One fresh group name per shard: channels-redis keeps a group on the shard its name hashes to."""
    ring_size = getattr(layer, "ring_size", 1)
    groups = {}
    while len(groups) < ring_size:
        name = f"health.{uuid.uuid4().hex}"
        groups.setdefault(layer.consistent_hash(name) if ring_size > 1 else 0, name)
    return list(groups.values())


async def round_trip():
    """Send a message through a group on every shard to a fresh channel, and receive it back.

    Uses a layer instance of its own (its own connections, closed afterwards), so a probe never shares
    state with the consumers of this process. Raises on any error; the caller bounds the time.
    """
    layer = channel_layers.make_backend("default")
    try:
        channel = await layer.new_channel()
        groups = _probe_groups(layer)
        for group in groups:
            message = {"type": "health.probe", "nonce": uuid.uuid4().hex}
            await layer.group_add(group, channel)
            try:
                await layer.group_send(group, message)
                received = await layer.receive(channel)
            finally:
                await layer.group_discard(group, channel)
            if received != message:
                raise ProbeLost("the channel layer returned another message than the one sent")
        return LayerProbe(shards=len(groups), shared=not isinstance(layer, InMemoryChannelLayer))
    finally:
        if hasattr(layer, "close_pools"):
            await layer.close_pools()
