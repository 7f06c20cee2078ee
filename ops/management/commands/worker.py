import os
import signal

from django.conf import settings
from django.core.management.base import CommandError
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV, run_with_reloader
from django_tasks_db.management.commands import db_worker

from ops.worker import TaskWorker


class Command(db_worker.Command):
    help = (
        "Run the task worker: django-tasks-db's db_worker on --threads threads, with a heartbeat for the health "
        "check and the housekeeping schedule. SIGTERM: finish the current tasks, then exit; a second SIGTERM "
        "exits at once, leaving the tasks' replies to their lease (the outbox sweep re-drives them). While the "
        "database is unavailable it waits for it rather than exit."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--threads",
            type=int,
            default=settings.WORKER_THREADS,
            help="Tasks run at once by this process (default: WORKER_THREADS, %(default)s).",
        )

    def handle(self, *, verbosity, queue_name, exclude_queues, reload, threads, batch, **options):
        self.configure_logging(verbosity)
        if threads < 1:
            raise CommandError("--threads must be at least 1.")
        pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
        if isinstance(pool, dict) and threads + 1 > pool["max_size"]:
            raise CommandError(
                f"--threads {threads} needs {threads + 1} database connections (one per thread, one for the "
                f"heartbeat), and DATABASE_POOL_MAX_SIZE is {pool['max_size']}: raise it, or run fewer threads."
            )
        queue_names = queue_name.split(",")
        excluded_queue_names = exclude_queues.split(",") if exclude_queues else []
        if excluded_queue_names and "*" not in queue_names:
            raise CommandError("--exclude-queues can only be used with --queue-name=*")
        worker = TaskWorker(
            threads=threads,
            queue_names=queue_names,
            excluded_queue_names=excluded_queue_names,
            batch=batch,
            **{name: options[name] for name in ("interval", "backend_name", "startup_delay", "max_tasks", "worker_id")},
        )
        if reload and not batch:
            if os.environ.get(DJANGO_AUTORELOAD_ENV) == "true":
                # Only the autoreloader's child runs the worker (and beats); its parent only restarts it.
                self.configure_signals(worker)
            run_with_reloader(worker.run)
        else:
            self.configure_signals(worker)
            worker.run()

    def configure_signals(self, worker):
        for name in ("SIGINT", "SIGTERM", "SIGQUIT"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), worker.shutdown)
