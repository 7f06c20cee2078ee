"""The bench's probes, switched on by settings in the servers the bench starts (never in production).

- ``BENCH_BROADCAST_LOG``: a receiver of tickets.hooks.announced, connected before realtime's, notes
  ``"<ticket_id> <seq> <time>"`` in that Redis list as each committed event's broadcast starts, so the
  fan-out is measured from the broadcast, the webhook's own time excluded.
- ``BENCH_PG_TRACE_DIR``: libpq's protocol trace of every pooled connection, one file each, from which
  the bench counts database round trips per update (one per ReadyForQuery).
"""

import asyncio
import itertools
import os
import time
from pathlib import Path

from django.apps import AppConfig
from django.conf import settings


class BenchConfig(AppConfig):
    name = "bench"
    verbose_name = "Benchmark probes"

    def ready(self):
        if settings.BENCH_BROADCAST_LOG:
            from tickets.hooks import announced

            announced.connect(note_broadcast, dispatch_uid="bench.note_broadcast")
        if settings.BENCH_PG_TRACE_DIR:
            from django.db.backends.signals import connection_created

            connection_created.connect(trace_protocol, dispatch_uid="bench.trace_protocol")


_redis = None


async def note_broadcast(sender, *, events, **kwargs):
    # Async like realtime's receiver, and connected before it: Django starts it first, so the time is taken
    # before the broadcast's first step (a sync receiver would run beside it, in a thread).
    now = time.time()
    await asyncio.to_thread(_push, [f"{event.ticket_id} {event.seq} {now}" for event in events])


def _push(lines):
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(settings.REDIS_URL)
    _redis.rpush(settings.BENCH_BROADCAST_LOG, *lines)


_traced = {}
_trace_numbers = itertools.count()


def trace_protocol(sender, connection, **kwargs):
    from psycopg import pq

    pgconn = connection.connection.pgconn
    if id(pgconn) in _traced:
        return
    path = Path(settings.BENCH_PG_TRACE_DIR) / f"pg-{os.getpid()}-{next(_trace_numbers)}.trace"
    trace_file = path.open("w")
    pgconn.trace(trace_file.fileno())
    pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
    _traced[id(pgconn)] = trace_file
