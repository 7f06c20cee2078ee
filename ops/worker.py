"""The task worker: django-tasks-db's database queue run on a few threads per process, with a heartbeat for
the health check and the housekeeping schedule (``manage.py worker``).

A task mostly waits (a delivery on PostgreSQL and on Telegram), so a process runs ``threads`` tasks at a
time, each thread polling the queue like django-tasks-db's worker (its claim is ``SELECT … FOR UPDATE SKIP
LOCKED``: no two threads or processes take one task). Which reply may go out is not the worker's business:
the outbox's rule (bots.outbox: a chat's head only, under the customer's row lock, with a lease) holds
across threads as it does across processes.

The events a task announces are held (realtime.broadcast.held_announcements) and sent when it is done, on
the process's one event loop (the bot's, BotLoop); a broadcast through ``async_to_sync`` from a thread with
no loop would start a thread, an event loop and Redis connections for each one.

django-tasks-db's worker loop has no hook between polls, so a daemon thread beats every
HEARTBEAT_SECONDS: it records that the process lives and, through the task_started / task_finished
signals, since when every thread has been busy (a worker stuck in its tasks shows as busy for long, not as
dead). Every beat also runs housekeeping if it is due (ops.housekeeping).

SIGTERM (or SIGINT) stops the threads taking tasks; each finishes the one it runs, then the process exits.
A second one exits at once, leaving the replies being sent to their lease (the outbox sweep re-drives them).
"""

import logging
import os
import signal
import socket
import sys
import threading

from django.db import close_old_connections, connections
from django.utils import timezone
from django_tasks_db.compat import task_finished, task_started
from django_tasks_db.management.commands.db_worker import Worker

from bots.application import BotLoop
from realtime.broadcast import BROADCAST_TIMEOUT_SECONDS, held_announcements, send_events

from .housekeeping import run_if_due
from .models import WorkerHeartbeat

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10


class Terminated(Exception):
    """Recorded as the outcome of a task its worker stopped in the middle of (a second SIGTERM)."""


class TaskThread(Worker):
    """django-tasks-db's worker loop on one thread of the process, its tasks' announcements held."""

    current_task = None

    def run_task(self, db_task_result):
        self.current_task = db_task_result
        try:
            with held_announcements() as announced:
                super().run_task(db_task_result)
        finally:
            self.current_task = None
        if announced:
            send_held(announced)


def send_held(events):
    try:
        # send_events bounds itself (BROADCAST_TIMEOUT_SECONDS); the margin covers the hop to the loop.
        BotLoop.call(lambda: send_events(events), timeout=BROADCAST_TIMEOUT_SECONDS + 1)
    except Exception:
        logger.exception(
            "Broadcast of %d events failed; they are stored, and clients catch up with resume.", len(events)
        )


class TaskWorker:
    """``threads`` TaskThreads and the heartbeat; ``shutdown`` is the signal handler (see the module)."""

    def __init__(self, *, threads, worker_id, **options):
        self.worker_id = worker_id
        self.workers = [TaskThread(worker_id=worker_id, **options) for _ in range(threads)]
        self.heartbeat = Heartbeat(worker_id, threads=threads)
        self.crashed = False

    def run(self):
        logger.info("Running %d task threads as worker %s.", len(self.workers), self.worker_id)
        self.heartbeat.start()
        threads = [
            threading.Thread(target=self._run_thread, args=(worker,), name=f"task-{number}", daemon=True)
            for number, worker in enumerate(self.workers)
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.5)  # a timed wait lets the main thread take signals meanwhile
        finally:
            self.heartbeat.stop()
        if self.crashed:
            sys.exit(1)

    def _run_thread(self, worker):
        try:
            worker.run()
        except Exception:
            # As the single-threaded worker would, stop the process (its manager restarts it), gracefully.
            logger.exception("A task thread failed; stopping the worker.")
            self.crashed = True
            self.stop_taking_tasks()
        finally:
            connections.close_all()

    def stop_taking_tasks(self):
        for worker in self.workers:
            worker.running = False

    def terminate(self):
        """Record the tasks being run as failed (so the sweep sees no live task, and re-drives their replies
        once their lease is over) and say goodbye, before the process exits without waiting for them."""
        for worker in self.workers:
            if (task := worker.current_task) is not None:
                task.set_failed(Terminated("The worker was stopped during this task."))
        self.heartbeat.say_goodbye()

    def shutdown(self, signum, frame):
        name = signal.strsignal(signum)
        if not all(worker.running for worker in self.workers):
            logger.warning("Received %s - terminating current task.", name)
            try:
                self.terminate()
            finally:
                os._exit(1)
        logger.warning("Received %s - shutting down gracefully... (press Ctrl+C again to force)", name)
        self.stop_taking_tasks()


class Heartbeat:
    def __init__(self, worker_id, threads=1):
        self.worker_id = worker_id
        self.threads = threads
        self.started = {}  # thread ident -> when its task started
        self.busy_since = None
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="worker-heartbeat", daemon=True)

    def start(self):
        task_started.connect(self.task_started, dispatch_uid=f"heartbeat-started-{self.worker_id}")
        task_finished.connect(self.task_finished, dispatch_uid=f"heartbeat-finished-{self.worker_id}")
        self.thread.start()

    def task_started(self, sender, **kwargs):
        with self.lock:
            self.started[threading.get_ident()] = timezone.now()
            self._note_busy()

    def task_finished(self, sender, **kwargs):
        with self.lock:
            self.started.pop(threading.get_ident(), None)
            self._note_busy()

    def _note_busy(self):
        # Busy while no thread is free to take a task: since the latest of their tasks started.
        self.busy_since = max(self.started.values()) if len(self.started) >= self.threads else None

    def run(self):
        while not self.stopped.is_set():
            try:
                self.beat()
                run_if_due()
            except Exception:
                logger.exception("Worker heartbeat or housekeeping failed; trying again in %s s.", HEARTBEAT_SECONDS)
            finally:
                close_old_connections()
            self.stopped.wait(HEARTBEAT_SECONDS)

    def beat(self):
        WorkerHeartbeat.objects.update_or_create(
            worker_id=self.worker_id,
            defaults={
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "beat_at": timezone.now(),
                "busy_since": self.busy_since,
            },
        )

    def stop(self):
        """Stop beating and say goodbye, so the health check does not wait for this worker's silence."""
        self.stopped.set()
        self.thread.join(HEARTBEAT_SECONDS)
        try:
            self.say_goodbye()
        finally:
            connections.close_all()

    def say_goodbye(self):
        WorkerHeartbeat.objects.filter(worker_id=self.worker_id).delete()
