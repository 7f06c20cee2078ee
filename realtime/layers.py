"""The channel layer on Redis: channels-redis' core layer, with its sharding fixed.

With several Redis hosts, channels-redis 4.3 picks the shard of a direct send to a process-specific
channel (``specific.<client>!<id>``) by hashing the whole name, while the receiving process reads the
shard of the part up to "!": about half such messages go to a shard nobody reads (django/channels#1492).
Group sends already hash that part. Hashing every name up to its "!" makes the three agree.
"""

from channels_redis.core import RedisChannelLayer as CoreRedisChannelLayer


class RedisChannelLayer(CoreRedisChannelLayer):
    def consistent_hash(self, value):
        name = value.decode() if isinstance(value, bytes) else value
        if "!" in name:
            name = name[: name.index("!") + 1]
        return super().consistent_hash(name)
