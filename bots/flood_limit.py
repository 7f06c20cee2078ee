"""Telegram's overall limit (about 30 messages a second per bot), shared by every worker and thread.

Sends are spaced 1/TELEGRAM_GLOBAL_MESSAGES_PER_SECOND seconds apart in the order they ask (a generic cell
rate algorithm with no burst): each takes the next free moment, and moves it on by one spacing. In Redis
that moment is one key moved by a Lua script, on Redis's clock: one atomic round trip per send, whichever
host or thread asks. A window counter per second, which this replaces, let up to twice the limit through
around the turn of a second (the end of one window and the start of the next). Without Redis (the
local-memory cache: one process by the settings' rule) the process's cache keeps it, behind a lock.
"""

import threading
import time

from django.conf import settings
from django.core.cache import cache
from django_redis.client import ShardClient
from redis.commands.core import Script

# KEYS[1]: the next free moment (µs); ARGV[1]: the spacing (µs); ARGV[2]: now (µs), or "" for Redis's clock.
# Returns how long this send waits (µs). The key expires a second after the moment it holds has passed.
NEXT_SEND_SCRIPT = b"""
local clock = redis.call('TIME')
local now = tonumber(ARGV[2]) or (tonumber(clock[1]) * 1000000 + tonumber(clock[2]))
local spacing = tonumber(ARGV[1])
local at = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
redis.call('SET', KEYS[1], string.format('%d', at + spacing), 'PX', math.ceil((at + spacing - now) / 1000) + 1000)
return at - now
"""
NEXT_SEND = Script(None, NEXT_SEND_SCRIPT)  # run with each thread's client (EVALSHA, loaded on first use)
NEXT_SEND_KEY = "telegram:next-send"


def reserve_send_slot(now=None):
    """Seconds to wait before this send so that all workers together stay within Telegram's overall limit
    (``now``, seconds since the epoch, for tests; Redis's clock otherwise).

    A thread holds one place at a time, so the wait is at most about (threads in all workers) / limit.
    """
    spacing = 1_000_000 // settings.TELEGRAM_GLOBAL_MESSAGES_PER_SECOND
    now_us = "" if now is None else int(now * 1_000_000)
    if settings.CACHES["default"]["BACKEND"] == "django_redis.cache.RedisCache":
        key = cache.make_key(NEXT_SEND_KEY)
        return NEXT_SEND(keys=[key], args=[spacing, now_us], client=_redis_holding(key)) / 1_000_000
    now_us = int(time.time() * 1_000_000) if now is None else now_us
    with _in_process:
        at = max(cache.get(NEXT_SEND_KEY, 0), now_us)
        cache.set(NEXT_SEND_KEY, at + spacing, timeout=(at + spacing - now_us) / 1_000_000 + 1)
    return (at - now_us) / 1_000_000


def _redis_holding(key):
    """The Redis server that holds the cache's ``key``: over shards, the one django-redis hashes it to (as every
    process does), which has no client for the cache as a whole."""
    client = cache.client
    return client.get_server(key) if isinstance(client, ShardClient) else client.get_client(write=True)


# The local-memory cache is this process's: a lock here makes its read and write one step.
_in_process = threading.Lock()
