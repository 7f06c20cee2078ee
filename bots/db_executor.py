"""The threads the webhook's database work runs on: a bounded pool of our own, as many as pooled connections.

Django runs each ASGI request in a ``ThreadSensitiveContext``, so a thread-sensitive ``sync_to_async``
in a request starts a new thread for it, and the request's connection goes back to the pool only when
the request finishes. Here a fixed set of threads takes the updates' transactions in turn, and each
gives its connection back as soon as its transaction is over: updates beyond the pool's size queue for
a thread instead of waiting on the pool, and nothing holds a connection while the request answers.
"""

import asyncio
import contextvars
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import OperationalError, close_old_connections

# Without a pool (SQLite in development) writes take turns anyway: a few threads are plenty.
_pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
THREADS = _pool["max_size"] if isinstance(_pool, dict) else 4
# While PostgreSQL is down each thread waits the pool's whole timeout for a connection, and work queued
# behind it would wait several such timeouts: past Telegram's webhook timeout, so it would count the
# delivery as failed instead of getting its 503. Work that waited this long for a thread gives up at once
# (nothing started, the caller answers 503 and Telegram redelivers).
MAX_QUEUE_SECONDS = _pool.get("timeout", 30) / 2 if isinstance(_pool, dict) else None

_executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="webhook-db")


async def run_in_db_thread(function, *args, **kwargs):
    """``function(*args, **kwargs)`` on one of the threads, in a copy of the caller's context; its result or its error.

    Django's connections are per thread: the one ``function`` used is closed afterwards, which gives it
    back to the pool (CONN_MAX_AGE is 0 with the pool), whether ``function`` returned or raised.
    """
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(
        _executor, context.run, _returning_connection, time.monotonic(), function, args, kwargs
    )


def _returning_connection(submitted, function, args, kwargs):
    waited = time.monotonic() - submitted
    if MAX_QUEUE_SECONDS is not None and waited > MAX_QUEUE_SECONDS:
        raise OperationalError(f"waited {waited:.1f} s for a database thread; the database is slow or down")
    try:
        return function(*args, **kwargs)
    finally:
        close_old_connections()
