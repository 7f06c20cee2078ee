"""The product's settings plus what only the benchmark serves: its baselines and its probes.

Every server the bench starts, ours and the baselines alike, runs with these settings, so the
middleware, the pool and the channel layer are the same for both sides of each ratio.
"""

import os

from supportsite.settings import *  # noqa: F403
from supportsite.settings import CHANNEL_LAYERS, INSTALLED_APPS, REDIS_URL

# Before realtime, so the bench's receiver of tickets.hooks.announced runs just before the broadcast's.
INSTALLED_APPS = [*INSTALLED_APPS]
INSTALLED_APPS.insert(INSTALLED_APPS.index("realtime"), "bench.apps.BenchConfig")

ROOT_URLCONF = "bench.urls"
ASGI_APPLICATION = "bench.asgi.application"

# BENCH_CHANNEL_LAYER=core swaps the product's layer (pub/sub) for channels-redis' core layer, on one Redis:
# the fan-out's comparison of the two.
if REDIS_URL and os.environ.get("BENCH_CHANNEL_LAYER") == "core":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # Its receive blocks on Redis for up to 5 s: reads must be allowed longer (SPEC §6).
                "hosts": [{**CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0], "socket_timeout": 30}],
                "prefix": CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
                "capacity": 1000,
                "expiry": 60,
            },
        }
    }

# Probes (bench.apps): the Redis list where broadcasts are noted, and a file for libpq's protocol trace.
BENCH_BROADCAST_LOG = os.environ.get("BENCH_BROADCAST_LOG", "")
BENCH_PG_TRACE_DIR = os.environ.get("BENCH_PG_TRACE_DIR", "")
