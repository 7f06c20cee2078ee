"""The task worker and the outbox sweep inside the server process (SUPPORTSITE_WORKER_IN_SERVER, G13).

On the in-memory channel layer (`make run`'s defaults) a worker in a process of its own could deliver
replies, but the delivery events it announces would go to its own layer, never to the server's sockets.
Inside the server, the worker runs on threads started from the server's event loop (``sync_to_async``),
so asgiref runs its announcements (realtime.broadcast's ``async_to_sync``) on that loop: the same layer
the sockets listen on. The worker is django-tasks-db's own, run in batches (``manage.py worker`` is
ops.worker's, on threads), with ``manage.py worker``'s heartbeat (for the health check) and housekeeping
schedule.
"""

import asyncio
import logging
import os
import time
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django_tasks_db.management.commands.db_worker import Worker

from bots.outbox import redrive_stranded_replies
from ops.worker import Heartbeat

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
SWEEP_EVERY_SECONDS = 30
RETRY_AFTER_ERROR_SECONDS = 5


def _sweep():
    redrive_stranded_replies(timedelta(seconds=settings.OUTBOX_STRANDED_AFTER_SECONDS))


async def run_worker():
    """Run the tasks that are ready, every POLL_SECONDS, and the outbox sweep every SWEEP_EVERY_SECONDS."""
    worker_id = f"server-{os.getpid()}"
    worker = Worker(
        queue_names=["default"],
        excluded_queue_names=[],
        interval=0,
        batch=True,  # each run() takes the tasks ready now, then returns
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id=worker_id,
    )
    Heartbeat(worker_id).start()
    logger.info("Running the task worker and the outbox sweep in this server process.")
    next_sweep = time.monotonic()
    while True:
        try:
            await sync_to_async(worker.run, thread_sensitive=False)()
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_EVERY_SECONDS
                await sync_to_async(_sweep, thread_sensitive=False)()
        except Exception:
            logger.exception("The task worker in the server failed; trying again in %s s.", RETRY_AFTER_ERROR_SECONDS)
            await asyncio.sleep(RETRY_AFTER_ERROR_SECONDS)
        await asyncio.sleep(POLL_SECONDS)


class WorkerInServer:
    """ASGI middleware that starts run_worker() on the server's event loop with the first connection
    (daphne sends no lifespan events to start it earlier)."""

    def __init__(self, app):
        self.app = app
        self.worker = None

    async def __call__(self, scope, receive, send):
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(run_worker())
        return await self.app(scope, receive, send)
