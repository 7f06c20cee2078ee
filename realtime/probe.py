"""A real round trip through the channel layer, for the health check (ops.health)."""

import uuid
from dataclasses import dataclass

from channels.layers import InMemoryChannelLayer, channel_layers

from .layers import RedisPubSubChannelLayer


@dataclass(frozen=True)
class LayerProbe:
    shards: int  # how many Redis instances carried a round trip
    shared: bool  # False for the in-memory layer, which other processes cannot see


class ProbeLost(Exception):
    """The message sent through the layer did not come back as sent."""


def _probe_groups(layer):
    """One fresh group name per shard: a group's messages travel through the shard its name hashes to."""
    if isinstance(layer, InMemoryChannelLayer):
        return [f"health.{uuid.uuid4().hex}"]
    groups = {}
    while len(groups) < layer.shard_count():
        name = f"health.{uuid.uuid4().hex}"
        groups.setdefault(layer.shard_of_group(name), name)
    return list(groups.values())


async def round_trip():
    """Send a message through a group on every shard to a fresh channel, and receive it back.

    Uses a layer instance of its own (its own connections, closed afterwards), so a probe never shares
    state with the consumers of this process. Raises on any error; the caller bounds the time.
    """
    layer = channel_layers.make_backend("default")
    if not isinstance(layer, (InMemoryChannelLayer, RedisPubSubChannelLayer)):
        raise TypeError(f"The health check probes the product's channel layers, not {type(layer).__name__}.")
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
        # Forgets the probe's channel and groups and closes its connections: this instance's own, on the layers
        # probed (channels-redis' core layer, refused above, would delete every process's channels).
        await layer.flush()
