"""The task worker: django-tasks-db's database queue run on a few threads per process, with a heartbeat for
the health check and the housekeeping schedule (``manage.py worker``).

A task mostly waits (a delivery on PostgreSQL and on Telegram), so a process runs ``threads`` tasks at a
time. The threads take turns at polling the queue (TaskWorker), claiming each task with one statement
(ops.task_backend, ``FOR UPDATE SKIP LOCKED``: no two threads or processes take one task), and run each as
django-tasks-db's worker does (its signals and result row). Which reply may go out is not the worker's
business: the outbox's rule (bots.outbox: a chat's head only, under the customer's row lock, with a lease)
holds across threads as it does across processes.

The events a task announces are held (tickets.hooks.held_announcements) and sent when it is done, on
the process's one event loop (the bot's, BotLoop); a broadcast through ``async_to_sync`` from a thread with
no loop would start a thread, an event loop and Redis connections for each one.

A daemon thread beats every HEARTBEAT_SECONDS, however long the tasks take: it records that the process
lives and, through the task_started / task_finished signals, since when every thread has been busy (a
worker stuck in its tasks shows as busy for long, not as dead). Every beat also runs housekeeping if it is
due (ops.housekeeping).

SIGTERM (or SIGINT) stops the threads taking tasks; each finishes the one it runs, then the process exits.
A second one exits at once, leaving the replies being sent to their lease (the outbox sweep re-drives them).
"""

import logging
import os
import random
import signal
import socket
import sys
import threading
import time

from django.db import OperationalError, close_old_connections, connections
from django.utils import timezone
from django_tasks_db.compat import task_finished, task_started
from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.utils import is_locked_database_exception

from bots.application import BotLoop
from realtime.broadcast import BROADCAST_TIMEOUT_SECONDS
from tickets.hooks import held_announcements, send_held

from .housekeeping import run_if_due
from .models import WorkerHeartbeat
from .task_backend import claim_next_task

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10
# Seconds a task thread waits before polling again while the database is unavailable.
DATABASE_RETRY_SECONDS = 1


class Terminated(Exception):
    """Recorded as the outcome of a task its worker stopped in the middle of (a second SIGTERM)."""


class TaskRunner(Worker):
    """django-tasks-db's way of running one claimed task (its signals and result row), announcements held."""

    current_task = None

    def run_task(self, db_task_result):
        self.current_task = db_task_result
        try:
            with held_announcements() as announced:
                super().run_task(db_task_result)
        finally:
            self.current_task = None
        if announced:
            announce_on_loop(announced)


def announce_on_loop(events):
    """Announce a task's held events on the process's one loop (the receivers log their own failures)."""
    try:
        # The broadcast bounds itself (BROADCAST_TIMEOUT_SECONDS); the margin covers the hop to the loop.
        BotLoop.call(lambda: send_held(events), timeout=BROADCAST_TIMEOUT_SECONDS + 1)
    except TimeoutError:
        logger.warning(
            "Announcing %d events timed out; they are stored, and clients catch up with resume.", len(events)
        )


class TaskWorker:
    """``threads`` threads taking tasks from the queue, and the heartbeat; ``shutdown`` is the signal handler.

    The threads poll in turn: the one holding the turn claims a task (then hands the turn on at once, since
    more may be waiting) or, finding none, waits ``interval`` before the next poll. An idle process thus
    polls once per interval like a single-threaded worker, and a busy one claims as fast as threads free up.
    """

    def __init__(self, *, threads, **options):
        """``options`` are django-tasks-db's Worker's (queues, interval, batch, max_tasks, worker_id, …)."""
        self.runners = [TaskRunner(**options) for _ in range(threads)]
        self.config = self.runners[0]  # the options, as that Worker keeps them
        self.heartbeat = Heartbeat(self.config.worker_id, threads=threads)
        self.turn = threading.Lock()
        self.stopping = threading.Event()
        self.counted = threading.Lock()
        self.tasks_run = 0
        self.crashed = False

    def run(self):
        config = self.config
        queues = ",".join(config.queue_names)
        logger.info("Starting worker worker_id=%s queues=%s threads=%d", config.worker_id, queues, len(self.runners))
        if config.startup_delay and config.interval:
            time.sleep(random.random())  # so that workers started together do not poll in step
        self.heartbeat.start()
        threads = [
            threading.Thread(target=self._take_tasks, args=(runner,), name=f"task-{number}", daemon=True)
            for number, runner in enumerate(self.runners)
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

    def _take_tasks(self, runner):
        try:
            while not self.stopping.is_set():
                try:
                    with self.turn:
                        task = self._poll()
                    if task is not None:
                        runner.run_task(task)
                        self._count_one()
                    elif self.config.batch:
                        return
                except OperationalError as error:
                    # The database is gone (a restart, a failover): a worker that gave up would leave every
                    # reply undelivered. A task whose outcome could not be recorded is left to its lease.
                    if self.config.batch:
                        raise
                    logger.warning("Database unavailable (%s); polling again in %s s.", error, DATABASE_RETRY_SECONDS)
                    self.stopping.wait(DATABASE_RETRY_SECONDS)
        except Exception:
            # As a single-threaded worker would, stop the process (its manager restarts it), gracefully.
            logger.exception("A task thread failed; stopping the worker.")
            self.crashed = True
            self.stopping.set()
        finally:
            connections.close_all()

    def _poll(self):
        """Claim the next ready task; or, if there is none, wait the interval (holding the turn) and say None."""
        if self.stopping.is_set():
            return None
        close_old_connections()
        config = self.config
        task = None
        try:
            task = claim_next_task(
                config.worker_id,
                backend_name=config.backend_name,
                queue_names=None if config.process_all_queues else config.queue_names,
                excluded_queue_names=config.excluded_queue_names,
            )
        except OperationalError as error:
            if not is_locked_database_exception(error):
                raise  # SQLite's busy database is worth another poll; anything else is not
        if task is None and not self.config.batch:
            self.stopping.wait(self.config.interval)
        return task

    def _count_one(self):
        with self.counted:
            self.tasks_run += 1
            if self.config.max_tasks is not None and self.tasks_run >= self.config.max_tasks:
                logger.info("Ran the maximum of %d tasks; stopping.", self.config.max_tasks)
                self.stopping.set()

    def terminate(self):
        """Record the tasks being run as failed (so the sweep sees no live task, and re-drives their replies
        once their lease is over) and say goodbye, before the process exits without waiting for them."""
        for runner in self.runners:
            if (task := runner.current_task) is not None:
                task.set_failed(Terminated("The worker was stopped during this task."))
        self.heartbeat.say_goodbye()

    def shutdown(self, signum, frame):
        name = signal.strsignal(signum)
        if self.stopping.is_set():
            logger.warning("Received %s - terminating current task.", name)
            try:
                self.terminate()
            finally:
                os._exit(1)
        logger.warning("Received %s - shutting down gracefully... (press Ctrl+C again to force)", name)
        self.stopping.set()


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
