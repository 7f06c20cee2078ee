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


def _probe_channels(layer):
    """One fresh channel name per shard: channels-redis places a plain channel by the hash of its name."""
    ring_size = getattr(layer, "ring_size", 1)
    channels = {}
    while len(channels) < ring_size:
        name = f"health.{uuid.uuid4().hex}"
        channels.setdefault(layer.consistent_hash(name) if ring_size > 1 else 0, name)
    return list(channels.values())


async def round_trip():
    """Send a message to a fresh channel on every shard and receive it back.

    Uses a layer instance of its own (its own connections, closed afterwards), so a probe never
    shares state with the consumers of this process. Raises on any error; the caller bounds the time.
    """
    layer = channel_layers.make_backend("default")
    try:
        channels = _probe_channels(layer)
        for channel in channels:
            message = {"type": "health.probe", "nonce": uuid.uuid4().hex}
            await layer.send(channel, message)
            if await layer.receive(channel) != message:
                raise ProbeLost("the channel layer returned another message than the one sent")
        return LayerProbe(shards=len(channels), shared=not isinstance(layer, InMemoryChannelLayer))
    finally:
        if hasattr(layer, "close_pools"):
            await layer.close_pools()
