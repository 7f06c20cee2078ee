"""django-tasks-db's database backend, with each task's row stored by one plain INSERT.

Every reply enqueues its delivery task in the transaction that queues it (bots.outbox). Through the ORM
(``DBTaskResult.objects.create``: the model's save, its signals, a compiled INSERT) that took more of the
webhook's CPU for a /status update than storing the reply itself (bench/profiles/webhook-status-before.txt).
The row is built as the library builds it, its ``pre_save`` receivers run, and it is stored the way the
webhook stores its own rows (tickets.services.rows).
"""

from django.db import connection
from django.db.models.signals import pre_save
from django_tasks_db.backend import DatabaseBackend as LibraryBackend
from django_tasks_db.compat import normalize_json
from django_tasks_db.models import DBTaskResult

from tickets.services import rows


class DatabaseBackend(LibraryBackend):
    def _task_to_db_task(self, task, args, kwargs):
        result = DBTaskResult(
            id=self._get_id(),
            args_kwargs=normalize_json({"args": args, "kwargs": kwargs}),
            priority=task.priority,
            task_path=task.module_path,
            queue_name=task.queue_name,
            run_after=task.run_after,
            backend_name=self.alias,
        )
        # The library's own receiver gives a task to run now its run_after (the end of time, by its convention).
        pre_save.send(sender=DBTaskResult, instance=result, raw=False, using=connection.alias, update_fields=None)
        rows.insert(result)
        return result
